"""CLI group 'store': `srlm store verify URI` (check every committed artifact under a store root, a run or one
artifact against its manifest: sizes and sha256 of every file)."""

from __future__ import annotations

import argparse
import json

from srlm.cli.common import command_group


def register(subparsers) -> None:
    commands = command_group(subparsers, "store", "Check the artifact store.")
    verify = commands.add_parser(
        "verify", help="Check every committed artifact under URI against its manifest (sizes and sha256).",
        description="Reads every manifest under URI (a store root, a run, or one artifact) and hashes every file "
        "it lists in full. Exit 1 naming each damaged artifact (a file missing, truncated or changed). Files in a "
        "committed attempt that its manifest does not list, and leftovers no manifest names (attempts of crashed "
        "or replaced writers), are counted but are not damage.",
    )  # fmt: skip
    verify.add_argument("uri", metavar="URI", help="A store root, a run (…/runs/NAME) or one artifact; local or s3://.")
    verify.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from srlm.errors import DamagedArtifactError
    from srlm.store.audit import audit, format_table

    result = audit(args.uri)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        for line in format_table(result):
            print(line)
    damaged = result.damaged
    if damaged:
        names = ", ".join(a.uri for a in damaged)
        raise DamagedArtifactError(
            f"{args.uri}: {len(damaged)} of {len(result.artifacts)} artifact(s) damaged: {names}"
        )
    return 0
