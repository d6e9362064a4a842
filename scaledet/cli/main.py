"""``scaledet`` command line: one sub-command per module in this package.

Every sub-command module exposes ``add_parser(subparsers)``, which registers its parser and sets
``func(args) -> int``. Errors print one line and exit non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import scaledet

SUBCOMMANDS = (
    "demo", "train", "eval", "eval_results", "predict", "info", "export", "benchmark", "convert",
    "convert_data", "configs",
)


class CliError(Exception):
    """An error whose message is meant for the user as it is."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaledet",
        description="Multi-scale object detectors: SpineNet, NAS-FPN and BlitzNet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with: scaledet demo",
    )
    parser.add_argument("--version", action="version", version=f"scaledet {scaledet.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"scaledet.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"scaledet.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--debug on every sub-command too, so it can follow the command name."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("scaledet: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's single error boundary
        if getattr(args, "debug", False):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"scaledet {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
