"""``scaledet predict``: detections JSON + drawings, or a COCO results file, for images or folders."""
from __future__ import annotations

from scaledet.cli.common import add_device_argument, add_precision_argument, image_size_arg, new_parser
from scaledet.errors import UsageError

EXAMPLE = """  scaledet predict --checkpoint runs/demo/best.pt photos/ street.jpg --output predictions/
  scaledet predict --checkpoint runs/demo/best.pt photos/ --output predictions/ --precision bf16
  scaledet predict --backend onnxruntime --model model.onnx photos/ --output predictions/ --score-threshold 0.4
  scaledet predict --checkpoint best.pt val2017/ --format coco --annotations instances_val2017.json --output preds/
      (then: scaledet eval-results coco --annotations instances_val2017.json --results preds/coco_results.json)
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "predict", "detect objects in images and draw them", EXAMPLE)
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--checkpoint", help="scaledet checkpoint (PyTorch backend)")
    p.add_argument("--model", help="exported ONNX file (onnxruntime backend)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    p.add_argument("--output", required=True, help="folder for detections.json and the drawings, or coco_results.json")
    p.add_argument("--format", default="scaledet", choices=["scaledet", "coco"],
                   help="scaledet: detections.json with class names + a drawing per image; coco: coco_results.json "
                        "in the COCO results format, with the data set's category ids (default: scaledet)")
    p.add_argument("--annotations", default=None, metavar="FILE.json",
                   help="--format coco: COCO annotation file whose image ids are looked up by file name "
                        "(default: ids from numeric file names)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="drop detections below this (default: 0.3 for drawings; the model's own for coco, as "
                        "`scaledet eval` scores it)")
    p.add_argument("--image-size", type=image_size_arg, default=None,
                   help="network input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--overwrite", action="store_true",
                   help="replace files already in OUTPUT (never the input images themselves)")
    p.add_argument("--no-optimize", action="store_true",
                   help="torch backend: keep BatchNorm unfolded and the default memory format")
    add_precision_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import math
    import sys

    from scaledet.engine.prediction_io import (collect_images, failed_images, predictor_for, write_coco_results,
                                               write_predictions)

    if args.annotations and args.format != "coco":
        raise UsageError("--annotations applies to --format coco")
    if args.score_threshold is not None and not math.isfinite(args.score_threshold):
        raise UsageError(f"--score-threshold must be a finite number, got {args.score_threshold}")
    images = collect_images(args.inputs)
    predictor = predictor_for(args.backend, checkpoint=args.checkpoint, onnx_model=args.model, device=args.device,
                              optimize=not args.no_optimize, precision=args.precision)
    if args.format == "coco":
        path = write_coco_results(predictor, images, args.output, annotations=args.annotations,
                                  score_threshold=args.score_threshold, image_size=args.image_size,
                                  batch_size=args.batch_size, overwrite=args.overwrite)
        print(f"wrote COCO results for {len(images)} images to {path}")
        return 0
    path = write_predictions(predictor, images, args.output,
                             score_threshold=0.3 if args.score_threshold is None else args.score_threshold,
                             image_size=args.image_size, batch_size=args.batch_size, overwrite=args.overwrite)
    failed = failed_images(path)
    print(f"wrote detections for {len(images) - len(failed)} images to {path} and drawings to {path.parent}")
    for line in failed:
        print(f"scaledet predict: error: {line}", file=sys.stderr)
    if failed:
        print(f"scaledet predict: {len(failed)} of {len(images)} images could not be used (listed in {path})",
              file=sys.stderr)
    return 1 if failed else 0
