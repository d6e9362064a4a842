"""Pieces shared by the sub-commands: config options, device option, help formatting."""
from __future__ import annotations

import argparse

from scaledet.cli.main import add_common_arguments


def new_parser(subparsers, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="example:\n" + example)
    add_common_arguments(parser)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("config", nargs=None if required else "?", help="a packaged config name (see `scaledet configs`) or a YAML file")
    add_set_argument(parser)


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value with a dotted key, e.g. --set train.total_steps=10 "
                             "(repeatable)")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                        help="where to run; auto picks a GPU when there is one, cuda:N the GPU of index N "
                             "(default: auto)")


def image_size_arg(text: str) -> int:
    """``--image-size``: a positive integer up to the config's MAX_IMAGE_SIZE (a huge value would
    otherwise try to allocate tens of GB before failing)."""
    from scaledet.config import MAX_IMAGE_SIZE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 < value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_IMAGE_SIZE}, got {value}")
    return value


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="torch backend: bf16 runs a bfloat16 copy of the network (fp32 in and out), several "
                        "times faster on CPUs with AMX / AVX-512 BF16; the accuracy cost is measurable with "
                        "`scaledet eval --precision bf16` (default: fp32)")
