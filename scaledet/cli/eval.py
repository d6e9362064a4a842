"""``scaledet eval CONFIG --checkpoint CKPT`` and/or ``--onnx MODEL.onnx``."""
from __future__ import annotations

import json
from pathlib import Path

from scaledet.cli.common import add_config_arguments, add_device_argument, add_precision_argument, new_parser
from scaledet.errors import UsageError

EXAMPLE = """  scaledet eval retinanet_spinenet49s_coco --checkpoint runs/49s/best.pt --set data.root=/data/coco
  scaledet eval retinanet_spinenet49s_coco --checkpoint runs/49s/best.pt --onnx 49s.onnx   (both, side by side)
  scaledet eval retinanet_spinenet49s_coco --checkpoint runs/49s/best.pt --precision bf16   (bf16 accuracy)
  SCALEDET_DATA_ROOT=/data scaledet eval blitznet300_r50_voc --checkpoint runs/blitz/last.pt --json
  torchrun --nproc_per_node=4 -m scaledet.cli.main eval blitznet300_r50_voc --checkpoint runs/blitz/last.pt
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "eval", "evaluate a checkpoint or an exported ONNX model on a config's validation split",
                   EXAMPLE)
    add_config_arguments(p)
    p.add_argument("--checkpoint", help="scaledet checkpoint (.pt)")
    p.add_argument("--onnx", help="exported ONNX model (`scaledet export`), run with ONNX Runtime on the same data "
                                  "and metric; with --checkpoint too, both are evaluated")
    p.add_argument("--output", default=None,
                   help="folder for results.json / results_onnx.json and the plots (default: next to the "
                        "checkpoint / ONNX file)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_precision_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from scaledet.config import load_config
    from scaledet.engine.distributed import cleanup, init_distributed, resolve_device
    from scaledet.engine.evaluate import evaluate_checkpoint

    if not (args.checkpoint or args.onnx):
        raise UsageError("give --checkpoint CKPT, --onnx MODEL.onnx, or both")
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(args.device)
    output = Path(args.output) if args.output else None
    info = init_distributed(device)  # under torchrun the images are shared out over the processes
    results = {}
    try:
        if args.checkpoint:
            results["checkpoint"] = evaluate_checkpoint(cfg, Path(args.checkpoint), device=device, output=output,
                                                        progress=not args.json, info=info,
                                                        precision=args.precision)
        if args.onnx:
            from scaledet.export.onnx_eval import evaluate_onnx

            results["onnx"] = evaluate_onnx(cfg, args.onnx, results_path=(output or Path(args.onnx).parent)
                                            / "results_onnx.json", progress=not args.json, info=info)
    finally:
        cleanup()
    if not info.is_main:  # every rank has the result; one prints it
        return 0
    from scaledet.eval.plots import write_evaluation_plots

    plots = {name: write_evaluation_plots(result, result.results_path.parent, "_onnx" if name == "onnx" else "")
             if result.results_path is not None else [] for name, result in results.items()}
    if args.json:
        payload = {name: result.to_json() for name, result in results.items()}
        print(json.dumps(payload if len(payload) > 1 else next(iter(payload.values()))))
        return 0
    for name, result in results.items():
        if len(results) > 1:
            print(f"\n{'PyTorch checkpoint ' + args.checkpoint if name == 'checkpoint' else 'ONNX Runtime ' + args.onnx}:")
        print(result.table)
        if result.results_path is not None:
            print(f"detections written to {result.results_path}")
        if plots[name]:
            print(f"plots: {', '.join(map(str, plots[name]))}")
    if len(results) > 1:
        key = cfg.train.keep_best
        torch_value, onnx_value = results["checkpoint"].metrics[key], results["onnx"].metrics[key]
        print(f"{key}: PyTorch {torch_value:.4f}, ONNX Runtime {onnx_value:.4f} "
              f"(difference {onnx_value - torch_value:+.4f})")
    return 0
