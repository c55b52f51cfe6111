"""Entry point: builds the parser from the subcommand modules and turns errors into one clear line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from srlm import __version__
from srlm.errors import SrlmError

# Each module defines register(subparsers); its subcommands set `func` via set_defaults(func=handler).
SUBCOMMAND_MODULES = [
    "srlm.cli.data",  # srlm data import
    "srlm.cli.model",  # srlm model prepare / tiny
    "srlm.cli.steps",  # srlm sft / prompts / generate / judge / pairs / dpo / iterate / run
    "srlm.cli.eval",  # srlm eval winrate / head2head / reward-model / monitors
    "srlm.cli.report",  # srlm report
    "srlm.cli.config",  # srlm config check / show
    "srlm.cli.plan",  # srlm plan-resources
    "srlm.cli.store",  # srlm store verify
    "srlm.cli.engines",  # srlm engines list / stop
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srlm", description="Self-Rewarding Language Models: seed SFT, self-rewarding DPO iterations, evaluation."
    )
    parser.add_argument("--version", action="version", version=f"srlm {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks and debug logs.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt:
        print("srlm: interrupted", file=sys.stderr)
        return 130
    except SrlmError as exc:
        if args.debug:
            raise
        print(f"srlm: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        print(f"srlm: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
