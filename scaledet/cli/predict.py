"""``scaledet predict``: detections JSON + drawings for images or folders."""
from __future__ import annotations

from scaledet.cli.common import add_device_argument, new_parser

EXAMPLE = """  scaledet predict --checkpoint runs/demo/best.pt photos/ street.jpg --output predictions/
  scaledet predict --backend onnxruntime --model model.onnx photos/ --output predictions/ --score-threshold 0.4
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "predict", "detect objects in images and draw them", EXAMPLE)
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--checkpoint", help="scaledet checkpoint (PyTorch backend)")
    p.add_argument("--model", help="exported ONNX file (onnxruntime backend)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    p.add_argument("--output", required=True, help="folder for detections.json and the drawings")
    p.add_argument("--score-threshold", type=float, default=0.3, help="drop detections below this (default 0.3)")
    p.add_argument("--image-size", type=int, default=None, help="network input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-optimize", action="store_true",
                   help="torch backend: keep BatchNorm unfolded and the default memory format")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from scaledet.engine.prediction_io import collect_images, predictor_for, write_predictions

    images = collect_images(args.inputs)
    predictor = predictor_for(args.backend, checkpoint=args.checkpoint, onnx_model=args.model, device=args.device,
                              optimize=not args.no_optimize)
    path = write_predictions(predictor, images, args.output, score_threshold=args.score_threshold,
                             image_size=args.image_size, batch_size=args.batch_size)
    print(f"wrote detections for {len(images)} images to {path} and drawings to {path.parent}")
    return 0
