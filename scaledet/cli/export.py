"""``scaledet export``: a checkpoint (or an untrained registered model) to one ONNX file."""
from __future__ import annotations

import math

from scaledet.cli.common import image_size_arg, new_parser
from scaledet.errors import UsageError

EXAMPLE = """  scaledet export --checkpoint runs/demo/best.pt --output model.onnx
  scaledet export --checkpoint runs/coco/last.pt --output model.onnx --image-size 640 --dynamic-batch
  scaledet export --model retinanet_spinenet49_tiny --num-classes 3 --output tiny.onnx --image-size 256
  scaledet predict --backend onnxruntime --model model.onnx photos/ --output predictions/
  scaledet export --checkpoint runs/demo/last.pt --output model_int8.onnx --int8 --calibration runs/demo/config.yaml

The graph takes normalised, zero-padded images [B,3,S,S] and image_sizes [B,2] (int64) and returns
boxes [B,K,4], scores [B,K], labels [B,K] (-1 = empty), num_detections [B] (and mask [B,S,S] for
BlitzNet), with NMS inside. The file is checked against PyTorch with ONNX Runtime before it is kept.
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "export", "export a detector (with its post-processing) to ONNX", EXAMPLE)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="scaledet checkpoint to export")
    source.add_argument("--model", help="registered model name, exported with its initial (untrained) weights")
    p.add_argument("--num-classes", type=int, default=None, help="with --model: number of classes")
    p.add_argument("--output", required=True, help="ONNX file to write")
    p.add_argument("--image-size", type=image_size_arg, default=None,
                   help="square input size, a multiple of the model's size divisor (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the graph (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; 11 to 20 supported)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="post-processing score threshold baked into the graph (default: the model's)")
    p.add_argument("--no-fuse-bn", dest="fuse_bn", action="store_false",
                   help="keep BatchNorm as separate nodes (default: folded into the convolutions)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (only once the new file "
                                                            "is complete and checked)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the ONNX Runtime vs PyTorch check after export")
    q = p.add_argument_group("int8 (static quantisation with ONNX Runtime, QDQ; NMS stays fp32)")
    q.add_argument("--int8", action="store_true", help="write an int8 model (needs --calibration)")
    q.add_argument("--calibration", metavar="DIR_OR_CONFIG",
                   help="calibration images: a folder, or a config (YAML file or packaged name) whose "
                        "training split is read")
    q.add_argument("--calibration-images", type=int, default=32, help="images used to calibrate (default 32)")
    q.add_argument("--int8-tolerance", type=float, default=0.01,
                   help="largest relative noise of the network outputs before layers fall back to fp32 "
                        "(default 0.01 = 20 dB SQNR)")
    q.add_argument("--int8-max-fallback", type=int, default=6,
                   help="most layer groups kept in fp32 by the sensitivity pass (0: quantise all; default 6)")
    p.set_defaults(func=run)


def load_model(args):
    if args.checkpoint:
        if args.num_classes is not None:
            raise UsageError("--num-classes only applies to --model; a checkpoint knows its classes")
        from scaledet.engine.inference import model_from_checkpoint

        return model_from_checkpoint(args.checkpoint, "cpu")
    from scaledet.registry import create_model

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    return create_model(args.model, **kwargs).eval()


def run(args) -> int:
    from pathlib import Path

    from scaledet.export.onnx import check_export_options, export_onnx
    from scaledet.utils.atomic import check_writable

    check_writable(Path(args.output), args.overwrite, "ONNX file")
    if args.score_threshold is not None and not math.isfinite(args.score_threshold):
        raise UsageError(f"--score-threshold must be a finite number, got {args.score_threshold}")
    model = load_model(args)
    image_size = args.image_size or model.default_image_size
    check_export_options(model, image_size, args.batch_size, args.opset)  # fail before the slow part
    if args.score_threshold is not None:
        if model.postprocessor is None:
            raise UsageError(f"{model.model_name} has no post-processor to set a score threshold on")
        model.postprocessor.score_threshold = args.score_threshold
    if args.int8 or args.calibration:
        return _run_int8(args, model, image_size)
    path = export_onnx(model, args.output, image_size=image_size, batch_size=args.batch_size,
                       dynamic_batch=args.dynamic_batch, opset=args.opset, fuse_bn=args.fuse_bn, verify=args.verify)
    batch = "dynamic batch" if args.dynamic_batch else f"batch {args.batch_size}"
    checked = "checked against PyTorch with ONNX Runtime" if args.verify else "not checked (--no-verify)"
    print(f"wrote {path} ({image_size}x{image_size}, {batch}, {path.stat().st_size / 1e6:.1f} MB); {checked}")
    return 0


def _run_int8(args, model, image_size: int) -> int:
    from scaledet.export.quantize import check_calibration_source, export_int8, sqnr_db

    if not (args.int8 and args.calibration):
        raise UsageError("--int8 and --calibration DIR_OR_CONFIG go together")
    check_calibration_source(args.calibration)
    if args.dynamic_batch or not args.fuse_bn:
        raise UsageError("--int8 exports a fixed batch with BatchNorm folded (drop --dynamic-batch / --no-fuse-bn)")
    path, report = export_int8(model, args.output, image_size=image_size, calibration=args.calibration,
                               batch_size=args.batch_size, opset=args.opset, verify=args.verify,
                               num_calibration=args.calibration_images, tolerance=args.int8_tolerance,
                               max_fallback=args.int8_max_fallback)
    kept = ", ".join(report.fp32_groups) or "none"
    print(f"wrote {path} (int8 QDQ, {image_size}x{image_size}, batch {args.batch_size}, "
          f"{path.stat().st_size / 1e6:.1f} MB): {report.quantized_nodes} nodes int8, groups kept fp32: {kept}; "
          f"network output SQNR {sqnr_db(report.output_error):.1f} dB on {report.probe_images} calibration images")
    if not report.within_tolerance:
        print(f"warning: below the {sqnr_db(report.tolerance):.1f} dB tolerance even with {len(report.fp32_groups)} "
              f"group(s) in fp32; measure its accuracy, or allow more with --int8-max-fallback")
    return 0
