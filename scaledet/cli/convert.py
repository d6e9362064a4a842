"""``scaledet convert``: turn other libraries' weights into scaledet checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path

from scaledet.cli import convert_tf_blitznet
from scaledet.errors import DataError
from scaledet.utils.atomic import check_writable

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

TF_EXAMPLE = """\
examples:
  scaledet convert tf-retinanet spinenet49/ckpt-1000 spinenet49.pt --model retinanet_spinenet49 --layout tf2
  scaledet convert tf-retinanet model_dir/model.ckpt-250000 49s.pt --model retinanet_spinenet49s --layout tpu
  scaledet eval retinanet_spinenet49s_coco --checkpoint 49s.pt --set data.root=/data/coco
"""

MS_EXAMPLE = """\
examples:
  # a checkpoint of the MindSpore NAS-FPN port (mindspore-ai/models research/cv/nas-fpn):
  scaledet convert mindspore-nasfpn retinanet-300_916.ckpt retinanet_nasfpn_r50_port.pt
  scaledet eval retinanet_nasfpn_r50_port --checkpoint retinanet_nasfpn_r50_port.pt --set data.root=/data/coco

The output is a retinanet_nasfpn_r50_port checkpoint (widths and class count read off the
tensors; the port's class order, COCO category ids) that eval/predict/export/train take as is.
See docs/CONVERT.md.
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
    tv.add_argument("--overwrite", "--force", dest="force", action="store_true",
                    help="replace OUTPUT if it exists (only once the new file is complete)")
    tv.set_defaults(func=run_torchvision_retinanet)
    ms = kinds.add_parser(
        "mindspore-nasfpn", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=MS_EXAMPLE,
        help="MindSpore NAS-FPN port .ckpt -> scaledet retinanet_nasfpn_r50_port checkpoint",
        description="Convert a checkpoint of the MindSpore NAS-FPN port (eval or training .ckpt; read without "
                    "MindSpore) into a scaledet checkpoint for retinanet_nasfpn_r50_port. Every parameter must "
                    "map; anything left over or missing is an error that lists it, and nothing is written.")
    add_common_arguments(ms)
    ms.add_argument("input", type=Path, help="MindSpore .ckpt of the port's network (names network.backbone...)")
    ms.add_argument("output", type=Path, help="scaledet checkpoint to write")
    ms.add_argument("--image-size", type=int, default=640, metavar="N",
                    help="square input size recorded with the model (the port's img_shape; default 640)")
    ms.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    ms.set_defaults(func=run_mindspore_nasfpn)
    convert_tf_blitznet.add_parser(kinds, add_common_arguments)

    tf = kinds.add_parser(
        "tf-retinanet", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TF_EXAMPLE,
        help="TensorFlow SpineNet / NAS-FPN RetinaNet checkpoint (tensorflow/tpu or TF2 Model Garden) -> "
             "scaledet checkpoint",
        description="Convert a TensorFlow RetinaNet checkpoint (no TensorFlow needed) into a scaledet checkpoint "
                    "that computes what the TF code computes: every variable is mapped by the model's "
                    "structure, the arithmetic options of the TF code (padding, down path, BN, box convention) "
                    "are recorded with it, and eval/predict/export/train rebuild the model from it alone. "
                    "See docs/CONVERT.md.")
    add_common_arguments(tf)
    tf.add_argument("input", type=Path, help="TF checkpoint: prefix (e.g. model.ckpt-1000), its .index file, or "
                                             "a directory holding one checkpoint")
    tf.add_argument("output", type=Path, help="scaledet checkpoint to write")
    tf.add_argument("--model", required=True, help="registered model, e.g. retinanet_spinenet49 or "
                                                    "retinanet_nasfpn_r50")
    tf.add_argument("--layout", required=True, choices=("tf2", "tpu"),
                    help="tf2: TF2 Model Garden (tf-models-official); tpu: the tensorflow/tpu detection code")
    tf.add_argument("--classes", default="coco80", choices=("coco80", "all"),
                    help="class channels kept (channel c = COCO category id c): coco80 the 80 COCO 2017 "
                         "categories (default), all every channel but the background")
    tf.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                    help="further create_model argument (YAML value), e.g. filter_size_scale=0.12; repeatable")
    tf.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    tf.set_defaults(func=run_tf_retinanet)


def run_torchvision_retinanet(args: argparse.Namespace) -> int:
    from scaledet.engine.checkpoint import save_atomic
    from scaledet.models.convert import torchvision_retinanet_checkpoint
    from scaledet.models.weights import load_state_dict_file

    check_writable(args.output, args.force, "checkpoint")
    state = load_state_dict_file(args.input)
    try:
        checkpoint = torchvision_retinanet_checkpoint(state, backbone_bn_eps=args.backbone_bn_eps)
    except (ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{args.input}: not a torchvision retinanet_resnet50_fpn state dict: {first}") from err
    save_atomic(checkpoint, args.output)
    print(f"wrote {args.output}: retinanet_resnet50_fpn, {checkpoint['model_args']['num_classes']} classes, "
          f"{len(checkpoint['model'])} tensors")
    return 0


def run_tf_retinanet(args: argparse.Namespace) -> int:
    from scaledet.convert.tf_retinanet import convert_tf_retinanet, parse_model_arg

    model_args = dict(parse_model_arg(text) for text in args.arg)
    checkpoint = convert_tf_retinanet(args.input, args.output, args.model, args.layout, model_args=model_args,
                                      classes=args.classes, force=args.force)
    print(f"wrote {args.output}: {args.model} ({args.layout} layout), {len(checkpoint['class_names'])} classes, "
          f"{checkpoint['converted_from']['tf_variables']} TF variables -> {len(checkpoint['model'])} tensors")
    return 0


def run_mindspore_nasfpn(args: argparse.Namespace) -> int:
    from scaledet.convert.mindspore_nasfpn import MODEL_NAME, mindspore_nasfpn_checkpoint

    check_writable(args.output, args.force, "checkpoint", "--force")
    checkpoint = mindspore_nasfpn_checkpoint(args.input, args.output, image_size=args.image_size)
    model_args = checkpoint["model_args"]
    print(f"wrote {args.output}: {MODEL_NAME}, {model_args['num_classes']} classes, "
          f"{len(checkpoint['model'])} tensors, input {model_args['image_size']}x{model_args['image_size']}")
    return 0
