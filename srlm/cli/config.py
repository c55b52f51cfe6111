"""CLI group 'config': `srlm config check FILE` (validate a config the way every command does, touching nothing
else) and `srlm config show` (every resolved value with its help text and whether it is the paper's value)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from srlm.cli.common import add_set_option, command_group

# The paper column of `config show`: the value is the paper's, differs from it, or the paper does not state one.
MATCHES_PAPER = "✓"
NOT_IN_PAPER = "—"


def register(subparsers) -> None:
    commands = command_group(
        subparsers, "config", "Check a config file, or show every resolved key with its help and the paper's value."
    )

    check = commands.add_parser(
        "check", help="Validate a config file (and --set overrides): exit 0 if valid, else 1 with the bad key.",
        description="Checks every key the way srlm run / iterate and the DAG plan task do: types, ranges, choices, "
        "batch divisibility and the rules between sections. Loads no model and touches no data.",
    )  # fmt: skip
    check.add_argument("file", metavar="FILE", help="YAML config file.")
    add_set_option(check)
    check.set_defaults(func=run_check)

    show = commands.add_parser(
        "show", help="Every resolved config value with its help text and whether it is the paper's value.",
    )  # fmt: skip
    show.add_argument(
        "--config", metavar="YAML", help="Config file. Default: built-in defaults (the paper's settings)."
    )
    add_set_option(show)
    show.add_argument("--json", action="store_true", help="One JSON object keyed by section.key instead of a table.")
    show.set_defaults(func=run_show)


def _load(path: str | None, overrides: list[str]):
    from srlm.config import load_config, parse_set_options

    return load_config(path, parse_set_options(overrides))


def run_check(args: argparse.Namespace) -> int:
    _load(args.file, args.overrides)
    print(f"{args.file}: valid")
    return 0


def resolved_values(config) -> dict[str, dict[str, Any]]:
    """Every leaf key of `config` with its value, help, allowed values, default and the paper's value."""
    from srlm.config import iter_field_docs

    out: dict[str, dict[str, Any]] = {}
    for doc in iter_field_docs():
        value: Any = config
        for part in doc.key.split("."):
            value = getattr(value, part)
        out[doc.key] = {
            "value": value,
            "help": doc.help,
            "type": doc.type_name,
            "allowed": doc.allowed or None,
            "default": doc.default,
            "paper": doc.paper,
            "is_paper": None if doc.paper is None else value == doc.paper,
        }
    return out


def _paper_column(entry: dict[str, Any]) -> str:
    from srlm.config import show_value

    if entry["is_paper"] is None:
        return NOT_IN_PAPER
    return MATCHES_PAPER if entry["is_paper"] else f"{show_value(entry['paper'])} (paper)"


def run_show(args: argparse.Namespace) -> int:
    from srlm.config import show_value

    values = resolved_values(_load(args.config, args.overrides))
    if args.json:
        print(json.dumps(values, indent=2, ensure_ascii=False))
        return 0
    rows = [("key", "value", "paper", "help")]
    rows += [(key, show_value(e["value"]), _paper_column(e), e["help"]) for key, e in values.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    return 0
