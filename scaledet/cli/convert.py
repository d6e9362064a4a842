"""``scaledet convert``: turn other libraries' weights into scaledet checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path

from scaledet.errors import DataError

EXAMPLE = """\
example:
  # torchvision's COCO weights, saved once from a machine with internet access:
  #   python -c "import torch, torchvision; m = torchvision.models.detection.retinanet_resnet50_fpn(
  #              weights='COCO_V1'); torch.save(m.state_dict(), 'tv_retinanet.pt')"
  scaledet convert torchvision-retinanet tv_retinanet.pt retinanet_r50_fpn_coco.pt

The output holds {"model", "model_name": "retinanet_resnet50_fpn",
"model_args": {"num_classes", "backbone_bn_eps"}, "format": "scaledet-checkpoint-v1"};
class indices stay torchvision's (COCO category ids, 0 = unused background).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from scaledet.cli.main import add_common_arguments

    parser = subparsers.add_parser("convert", help="convert other libraries' weights to scaledet checkpoints",
                                   description="Convert other libraries' weights to scaledet checkpoints.",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    add_common_arguments(parser)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    tv = kinds.add_parser(
        "torchvision-retinanet", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE,
        help="torchvision retinanet_resnet50_fpn state dict -> scaledet retinanet_resnet50_fpn checkpoint",
        description="Convert the state dict of torchvision's retinanet_resnet50_fpn (a local file; nothing is "
                    "downloaded) into a scaledet checkpoint for the model retinanet_resnet50_fpn. The converted "
                    "weights are loaded into a freshly built model before writing, so a mismatch fails here.")
    add_common_arguments(tv)
    tv.add_argument("input", type=Path, help="torchvision state dict (.pt/.pth; may be wrapped in 'model' or "
                                             "'state_dict')")
    tv.add_argument("output", type=Path, help="scaledet checkpoint to write")
    tv.add_argument("--backbone-bn-eps", type=float, default=0.0, metavar="EPS",
                    help="eps of the backbone's frozen BN recorded in the checkpoint (default 0.0: torchvision "
                         "runs its published COCO_V1 weights so; use 1e-5 for weights of a model built with "
                         "torchvision's defaults and trained yourself)")
    tv.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    tv.set_defaults(func=run_torchvision_retinanet)


def run_torchvision_retinanet(args: argparse.Namespace) -> int:
    import torch

    from scaledet.models.convert import torchvision_retinanet_checkpoint
    from scaledet.models.weights import load_state_dict_file

    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output}: already exists (use --force to overwrite)")
    state = load_state_dict_file(args.input)
    try:
        checkpoint = torchvision_retinanet_checkpoint(state, backbone_bn_eps=args.backbone_bn_eps)
    except (ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{args.input}: not a torchvision retinanet_resnet50_fpn state dict: {first}") from err
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.output)
    print(f"wrote {args.output}: retinanet_resnet50_fpn, {checkpoint['model_args']['num_classes']} classes, "
          f"{len(checkpoint['model'])} tensors")
    return 0
