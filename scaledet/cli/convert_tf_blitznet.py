"""``scaledet convert tf-blitznet CKPT OUT.pt``: a BlitzNet checkpoint of the authors' TF code."""
from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """\
example:
  scaledet convert tf-blitznet blitznet300_x4/model.ckpt-65000 blitznet300_voc.pt
  scaledet eval --checkpoint blitznet300_voc.pt --config blitznet300_r50_voc

CKPT is a TF checkpoint prefix (model.ckpt-N), one of its files, or its folder. Every variable must
map onto the model the shapes describe (300/512, x4, classes, widths); optimizer slots and step
counters are ignored; anything else left over, missing or of the wrong shape is an error listing
them. The output records the TF test-time arithmetic (legacy bilinear resizes, x255 - mean input),
so eval, predict and export need no flags.
"""


def add_parser(kinds: argparse._SubParsersAction, add_common_arguments) -> None:
    parser = kinds.add_parser(
        "tf-blitznet", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE,
        help="BlitzNet TF checkpoint (dvornikita/blitznet) -> scaledet checkpoint",
        description="Convert a BlitzNet checkpoint written by the authors' TensorFlow code into a scaledet "
                    "checkpoint (blitznet300_r50 / blitznet512_r50).")
    add_common_arguments(parser)
    parser.add_argument("input", type=Path, help="TF checkpoint prefix, file or folder")
    parser.add_argument("output", type=Path, help="scaledet checkpoint to write (atomically)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaledet.convert.blitznet_tf import convert_blitznet_tf
    from scaledet.engine.checkpoint import save_atomic
    from scaledet.utils.atomic import check_writable

    check_writable(args.output, args.force, "checkpoint", "--force")
    payload = convert_blitznet_tf(args.input)
    save_atomic(payload, args.output)
    model_args = payload["model_args"]
    print(f"wrote {args.output}: {payload['model_name']} (x4={model_args['x4']}, "
          f"{model_args['num_classes']} classes, width/{model_args['width_divisor']}), "
          f"{payload['source']['variables']} TF variables -> {len(payload['model'])} tensors")
    return 0
