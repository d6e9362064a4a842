"""``scaledet info MODEL``: parameters, multiply-adds, anchors and output levels."""
from __future__ import annotations

import json

from scaledet.cli.common import image_size_arg, new_parser

EXAMPLE = """  scaledet info retinanet_spinenet49s --image-size 640 --num-classes 91
  scaledet info retinanet_nasfpn_r50 --json
  scaledet info --list
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "info", "print a model's size, cost and output levels", EXAMPLE)
    p.add_argument("model", nargs="?", help="registered model name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered models")
    p.add_argument("--image-size", type=image_size_arg, default=None,
                   help="square input size (default: the model's own)")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes (default: the model's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def describe(name: str, image_size: int | None = None, num_classes: int | None = None, *,
             count_mult_adds: bool = True) -> dict:
    """What `scaledet info` prints, as a dict (``macs`` left out with ``count_mult_adds=False``)."""
    import torch

    from scaledet.registry import builder_arguments, create_model
    from scaledet.utils.flops import count_macs, count_params

    kwargs = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if image_size is not None and "image_size" in builder_arguments(name):
        kwargs["image_size"] = image_size
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    size = image_size or model.default_image_size
    info = {"model": name, "image_size": size, "num_classes": model.num_classes, "params": count_params(model),
            "eval_resize": eval_resize(model)}
    if count_mult_adds:
        info["macs"] = count_macs(model, size, device="meta")
    info["anchors"] = model.num_anchors(size, size)
    info["levels"] = [{"level": f.level, "stride": f.stride, "channels": f.channels} for f in model.feature_info]
    return info


def eval_resize(model) -> str:
    """How predict and eval resize an image by default (the size a user must know to get speed
    or accuracy figures comparable with other libraries)."""
    size = model.default_image_size
    if not model.input_spec.square:
        return (f"long side resized to {size} px, aspect kept (smaller images are upscaled); "
                f"change with predict(..., image_size=N) or --image-size")
    return f"resized to {size}x{size} px; change with predict(..., image_size=N) or --image-size"


def run(args) -> int:
    from scaledet.registry import list_models

    if args.list or not args.model:
        names = list_models()
        print(json.dumps(names) if args.json else "\n".join(names))
        return 0
    info = describe(args.model, args.image_size, args.num_classes)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"model       {info['model']}")
    print(f"input       {info['image_size']}x{info['image_size']}, {info['num_classes']} classes")
    print(f"eval input  {info['eval_resize']}")
    print(f"params      {info['params']:,} ({info['params'] / 1e6:.2f} M)")
    print(f"mult-adds   {info['macs']:,} ({info['macs'] / 1e9:.2f} B)")
    print(f"anchors     {info['anchors']:,}")
    for lv in info["levels"]:
        print(f"  P{lv['level']}  stride {lv['stride']:>3}  channels {lv['channels']}")
    return 0
