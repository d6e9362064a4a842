"""``scaledet train CONFIG --output DIR``."""
from __future__ import annotations

import json

from scaledet.cli.common import add_config_arguments, add_device_argument, new_parser

EXAMPLE = """  scaledet train configs/retinanet_spinenet49s_coco.yaml --output runs/49s \\
      --set data.train_images=coco/train2017 --set train.total_steps=1000
  torchrun --nproc_per_node=8 -m scaledet.cli.main train configs/retinanet_nasfpn_r50_coco.yaml --output runs/nasfpn
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "train", "train a detector from a YAML config", EXAMPLE)
    add_config_arguments(p)
    p.add_argument("--output", required=True, help="run folder: checkpoints, logs, metrics")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT/last.pt when it exists (same step, LR, optimizer and RNG state)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from scaledet.config import load_config
    from scaledet.engine.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    result = Trainer(cfg, args.output, resume=args.resume, device=args.device, progress=not args.no_progress).fit()
    if result.get("final"):
        from scaledet.eval.coco import format_coco_table

        print(format_coco_table(result["final"]))
    print(json.dumps({"step": result["step"], "output_dir": result["output_dir"]}))
    return 0
