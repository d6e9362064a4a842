"""``scaledet train CONFIG --output DIR``."""
from __future__ import annotations

import json

from scaledet.cli.common import add_config_arguments, add_device_argument, new_parser

EXAMPLE = """  scaledet train retinanet_spinenet49s_coco --output runs/49s \\
      --set data.root=/data/coco --set train.total_steps=1000
  SCALEDET_DATA_ROOT=/data torchrun --nproc_per_node=8 --max-restarts=1 -m scaledet.cli.main \\
      train retinanet_nasfpn_r50_coco --output runs/nasfpn --resume auto
  scaledet train my_recipe.yaml --output runs/mine      (a YAML file; start from `scaledet configs NAME`)
  (optim.lr is for the global batch, train.batch_size x processes; see docs/DISTRIBUTED.md)
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "train", "train a detector from a YAML config", EXAMPLE)
    add_config_arguments(p)
    p.add_argument("--output", required=True, help="run folder: checkpoints, logs, metrics")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=[True, "auto"],
                   type=lambda v: "auto" if v == "auto" else v, metavar="auto",
                   help="continue from OUTPUT/last.pt (same step, LR, optimizer and RNG state); an error when "
                        "there is none, unless given as `--resume auto`, which then starts afresh")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUTPUT (its checkpoints, config and logs are deleted)")
    p.add_argument("--check-data", action="store_true",
                   help="decode every training and validation image before step 1, listing the ones that fail")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="under torchrun: how long a collective may wait for the other processes before "
                        "failing (default: $SCALEDET_DIST_TIMEOUT or 300)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from scaledet.config import load_config
    from scaledet.engine.trainer import Trainer

    from scaledet.engine.distributed import cleanup

    cfg = load_config(args.config, args.overrides)
    try:
        trainer = Trainer(cfg, args.output, resume=args.resume, overwrite=args.overwrite, device=args.device,
                          progress=not args.no_progress, dist_timeout_s=args.dist_timeout, check_data=args.check_data)
        result = trainer.fit()
    finally:
        cleanup()
    if not trainer.info.is_main:  # under torchrun only rank 0 reports
        return 0
    if result["evaluation"] is not None:
        print(result["evaluation"].table)
    print(json.dumps({"step": result["step"], "output_dir": result["output_dir"]}))
    return 0
