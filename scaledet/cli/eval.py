"""``scaledet eval CONFIG --checkpoint CKPT``."""
from __future__ import annotations

import json
from pathlib import Path

from scaledet.cli.common import add_config_arguments, add_device_argument, new_parser

EXAMPLE = """  scaledet eval retinanet_spinenet49s_coco --checkpoint runs/49s/best.pt --set data.root=/data/coco
  SCALEDET_DATA_ROOT=/data scaledet eval blitznet300_r50_voc --checkpoint runs/blitz/last.pt --json
  torchrun --nproc_per_node=4 -m scaledet.cli.main eval blitznet300_r50_voc --checkpoint runs/blitz/last.pt
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "eval", "evaluate a checkpoint on a config's validation split", EXAMPLE)
    add_config_arguments(p)
    p.add_argument("--checkpoint", required=True, help="scaledet checkpoint (.pt)")
    p.add_argument("--output", default=None, help="folder for results.json (default: next to the checkpoint)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from scaledet.config import load_config
    from scaledet.engine.distributed import cleanup, init_distributed, resolve_device
    from scaledet.engine.evaluate import evaluate_checkpoint

    cfg = load_config(args.config, args.overrides)
    device = resolve_device(args.device)
    info = init_distributed(device)  # under torchrun the images are shared out over the processes
    try:
        result = evaluate_checkpoint(cfg, Path(args.checkpoint), device=device,
                                     output=Path(args.output) if args.output else None, progress=not args.json,
                                     info=info)
    finally:
        cleanup()
    if not info.is_main:  # every rank has the result; one prints it
        return 0
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(result.table)
    if result.results_path is not None:
        print(f"detections written to {result.results_path}")
    return 0
