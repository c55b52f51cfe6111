"""What the `srlm` subcommand modules share."""

from __future__ import annotations

import argparse


def command_group(subparsers, name: str, help: str) -> argparse._SubParsersAction:
    """A subcommand group (`srlm NAME COMMAND …`) that prints its usage and exits 2 when no COMMAND is given."""
    group = subparsers.add_parser(name, help=help)
    group.set_defaults(func=lambda args: _usage(group))
    return group.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def add_set_option(parser) -> None:
    """`--set SECTION.KEY=VALUE` (repeatable): the config override every config-reading command takes."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="Override one config value, e.g. --set dpo.beta=0.2 (repeatable; values are YAML scalars).",
    )  # fmt: skip


def add_backend_option(parser) -> None:
    """`--backend`: a shortcut for backend.backend, its choices and help read from the config field."""
    from srlm.config import field_doc

    doc = field_doc("backend.backend")
    parser.add_argument("--backend", choices=doc.choices, help=f"{doc.help} (backend.backend)")
