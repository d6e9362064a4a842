"""``scaledet`` command line: one sub-command per module in this package.

Every sub-command module exposes ``add_parser(subparsers)``, which registers its parser and sets
``func(args) -> int``. A user error (:class:`scaledet.errors.ScaledetError`, or the operating
system refusing a file) prints one line and exits 1; any other exception is a bug and prints
its traceback and a line asking for a report, exit 1. ``--debug`` re-raises every error.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

import scaledet
from scaledet.errors import ScaledetError

SUBCOMMANDS = (
    "demo", "train", "eval", "eval_results", "predict", "info", "export", "benchmark", "convert",
    "convert_data", "configs", "serve",
)
BUG_REPORT = ("scaledet {command}: internal error ({error}): this is a bug in scaledet {version}, not in "
              "your input; please report it with the command line and the traceback above")


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
    except (ScaledetError, OSError) as err:
        # OSError: the system refused a file the user named (permission, disk, missing path)
        if args.debug:
            raise
        print(f"scaledet {args.command}: error: {first_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the CLI's single error boundary
        if args.debug:
            raise
        traceback.print_exc()
        print(BUG_REPORT.format(command=args.command, error=f"{type(err).__name__}: {first_line(err)}",
                                version=scaledet.__version__), file=sys.stderr)
        return 1


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    if text.startswith("Caught ") and "DataLoader worker" in text.splitlines()[0]:
        # torch re-raises a worker's error as "Caught ImageError in DataLoader worker process 1."
        # followed by the worker's traceback; its last line holds the message naming the file.
        last = text.splitlines()[-1]
        prefix = f"{type(err).__module__}.{type(err).__name__}: "
        message = last[len(prefix):] if last.startswith(prefix) else last.split(": ", 1)[-1]
        return f"{message} (in a data loader worker)"
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
