"""CLI group 'data': `srlm data import` turns jsonl / parquet / alpaca / oasst sources into seed tables."""

from __future__ import annotations

import argparse
import json

from srlm.cli.common import command_group
from srlm.data.importers import FORMATS
from srlm.data.importers.options import OASST_EXCLUDED_TREE_STATES


def register(subparsers) -> None:
    commands = command_group(subparsers, "data", "Import seed data (IFT, EFT, human-ranked evaluation groups).")

    imp = commands.add_parser(
        "import",
        help="Validate a dataset and write <out>/ift, <out>/eft and <out>/eval_groups as committed tables.",
        description=(
            "Read a dataset, validate every row, and write three committed tables under --out: ift and eft "
            "(sft_examples) and eval_groups. jsonl/parquet rows hold chat `messages` (last = assistant answer), "
            "`prompt`/`response` (+ optional `system`) or `prompt_messages`/`completion`; an optional `kind` "
            "(ift/eft) is honoured, otherwise a judge prompt whose answer ends in 'Score: N' is EFT. alpaca: "
            "{instruction, input, output}. oasst: OpenAssistant tree or message exports; IFT = rank-0 replies to "
            "first turns, eval groups = every ranked sibling group. The summary counts every record left out, by "
            "reason; an import that yields no rows at all fails and commits nothing (unless --allow-empty). "
            "Rerunning an identical import is a no-op."
        ),
    )
    imp.add_argument("--format", required=True, choices=FORMATS, help="Input format.")
    imp.add_argument("--input", required=True, metavar="PATH", help="Input file (.gz accepted) or a directory of them.")
    imp.add_argument(
        "--out", required=True, metavar="URI", help="Output prefix: local path, file://… or s3://bucket/prefix."
    )
    imp.add_argument("--json", action="store_true", help="Print the summary as one JSON object.")
    imp.add_argument(
        "--skip-invalid", action="store_true", help="Skip invalid rows and list them in the summary instead of failing."
    )
    imp.add_argument("--lang", default="en", help="oasst: language code to keep, or 'all' (default: en).")
    imp.add_argument("--include-synthetic", action="store_true", help="oasst: keep messages marked synthetic.")
    imp.add_argument(
        "--tree-states",
        metavar="STATE[,STATE…]",
        help="oasst: keep only trees in these states (default: all but "
        f"{', '.join(sorted(OASST_EXCLUDED_TREE_STATES))}).",
    )
    imp.add_argument(
        "--judge-template",
        default="additive_5pt",
        help="jsonl/parquet: judge template (shipped name or file) whose prompts mark EFT rows "
        "(default: additive_5pt).",
    )
    imp.add_argument("--force", action="store_true", help="Replace committed output instead of keeping it.")
    imp.add_argument(
        "--allow-empty",
        action="store_true",
        help="Commit empty tables when nothing can be imported (default: that is an error and nothing is committed).",
    )
    imp.add_argument(
        "--s3-endpoint-url", metavar="URL", help="S3 endpoint (MinIO, moto, …); default: AWS_ENDPOINT_URL[_S3]."
    )
    imp.set_defaults(func=run_import_command)


def run_import_command(args: argparse.Namespace) -> int:
    from srlm.config import StoreConfig
    from srlm.data.import_job import ImportRequest, run_import
    from srlm.data.importers.options import ReadOptions
    from srlm.store import configure_store

    tree_states = None
    if args.tree_states:
        tree_states = frozenset(s.strip() for s in args.tree_states.split(",") if s.strip())
    request = ImportRequest(
        format=args.format,
        input=args.input,
        out=args.out,
        options=ReadOptions(
            lang=args.lang,
            include_synthetic=args.include_synthetic,
            tree_states=tree_states,
            judge_template=args.judge_template,
        ),
        skip_invalid=args.skip_invalid,
        force=args.force,
        allow_empty=args.allow_empty,
    )
    if args.s3_endpoint_url:
        configure_store(StoreConfig(s3_endpoint_url=args.s3_endpoint_url))
    summary = run_import(request)
    print(json.dumps(summary.to_dict(), ensure_ascii=False) if args.json else summary.to_text())
    return 0
