"""``scaledet demo``: the whole pipeline on a generated data set, in minutes, on a laptop CPU."""
from __future__ import annotations

import time
from pathlib import Path

from scaledet.cli.common import add_device_argument, add_set_argument, new_parser

EXAMPLE = """  scaledet demo                       # generate data, train, evaluate, draw predictions
  scaledet demo --output /tmp/demo --set train.total_steps=100
"""

# Chosen so that a 2-core CPU finishes in well under 10 minutes and reaches AP50 >= 0.8.
DEMO_OVERRIDES = {
    "model.name": "retinanet_spinenet49_tiny",
    "data.format": "synthetic",
    "data.synthetic_train": 512,
    "data.synthetic_val": 64,
    "data.synthetic_image_size": 256,
    "data.scale_min": 0.75,
    "data.scale_max": 1.25,
    "data.num_workers": 1,
    "optim.optimizer": "adamw",
    "optim.lr": 0.003,
    "optim.weight_decay": 0.0001,
    "optim.schedule": "cosine",
    "optim.warmup_steps": 30,
    "optim.warmup_start_lr": 0.0003,
    "optim.grad_clip": 10.0,
    "train.batch_size": 16,
    "train.total_steps": 400,
    "train.eval_every": 0,
    "train.checkpoint_every": 100,
    "train.log_every": 10,
    "eval.batch_size": 16,
}


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "demo", "train, evaluate and run a small SpineNet-RetinaNet on generated shapes",
                   EXAMPLE)
    p.add_argument("--output", default="scaledet_demo", help="folder for data, run and predictions "
                                                              "(default: ./scaledet_demo)")
    p.add_argument("--num-predictions", type=int, default=8, help="validation images to draw")
    add_set_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def demo_config(output: Path, overrides: list[str]):
    from scaledet.config import load_config

    base = dict(DEMO_OVERRIDES)
    base["data.root"] = str(output / "data")
    return load_config(None).replace(base).replace(overrides)


def run(args) -> int:
    from scaledet.engine.prediction_io import write_predictions
    from scaledet.engine.trainer import Trainer
    from scaledet.eval.coco import format_coco_table
    from scaledet.eval.plots import write_evaluation_plots
    from scaledet.utils.atomic import write_json

    start = time.perf_counter()
    output = Path(args.output)
    cfg = demo_config(output, args.overrides)
    print(f"scaledet demo: {cfg.model.name} on {cfg.data.synthetic_train} generated images "
          f"({cfg.data.synthetic_image_size}px), {cfg.train.total_steps} steps of batch {cfg.train.batch_size}")
    # the demo regenerates everything under its own folder: a rerun replaces the previous demo run
    trainer = Trainer(cfg, output / "run", device=args.device, overwrite=True)
    result = trainer.fit()
    stats = result["final"]
    print("\nCOCO evaluation on the synthetic validation split:")
    print(format_coco_table(stats))
    run_dir = output / "run"
    plots = write_evaluation_plots(result["evaluation"], run_dir)  # pr_curves.png, per_class_ap.png
    val_dir = Path(cfg.data.root) / "val"
    images = sorted(val_dir.iterdir())[: args.num_predictions]
    model = trainer.ema.module if trainer.ema is not None else trainer.model
    model.eval()
    pred_path = write_predictions(model, images, output / "predictions", score_threshold=0.4, batch_size=8,
                                  progress=False, overwrite=True)
    elapsed = time.perf_counter() - start
    summary = {"AP": stats["AP"], "AP50": stats["AP50"], "seconds": round(elapsed, 1), "steps": result["step"]}
    write_json(output / "summary.json", summary)
    print(f"\nDone in {elapsed / 60:.1f} min: AP50 {stats['AP50']:.3f}, AP {stats['AP']:.3f}.")
    print(f"  checkpoint   {output / 'run' / 'last.pt'}")
    print(f"  logs         {output / 'run' / 'metrics.csv'} and {output / 'run' / 'tensorboard'}")
    print(f"  plots        {run_dir / 'curves.png'} (losses, LR, AP), {', '.join(map(str, plots))}")
    print(f"  predictions  {pred_path.parent} ({len(images)} drawn images + detections.json)")
    print(f"Next: scaledet predict --checkpoint {output / 'run' / 'last.pt'} YOUR_IMAGES --output preds/")
    return 0
