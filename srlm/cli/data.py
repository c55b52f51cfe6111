"""CLI group 'data': `srlm data import` turns jsonl / parquet / alpaca / oasst sources into seed tables;
`srlm data build-eft` builds EFT data from human-ranked groups the way the paper does (srlm.data.eft_from_rankings)."""

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
    _register_build_eft(commands)


def _register_build_eft(commands) -> None:
    from srlm.cli.common import add_backend_option, add_set_option
    from srlm.data.eft_from_rankings import DEFAULT_EVAL_FRACTION

    eft = commands.add_parser(
        "build-eft",
        help="Build EFT data as the paper does: MODEL judges human-ranked responses, judgments that agree with "
        "the human ranking are kept, scores balanced.",
        description=(
            "Hold out a hash-chosen share of the human-ranked groups (--eval-fraction) as <out>/eval_groups; have "
            "MODEL judge every other response K times with the judge template; keep a group's judgments when one "
            "judgment per response orders the responses as the humans did (strictly); trim the most frequent score "
            "to the count of the runner-up; commit the result as <out>/train (sft_examples, kind eft: point "
            "seed_data.eft_uri at it) and write <out>/build_eft_summary.json. A build that keeps nothing fails and "
            "commits nothing (unless --allow-empty). Rerunning an identical build is a no-op."
        ),
    )
    eft.add_argument("--model", required=True, metavar="SPEC", help="Judge model (the SFT baseline): alias, directory, checkpoint URI, or M<k> with --run.")
    eft.add_argument("--groups", required=True, metavar="URI", help="eval_groups table, or an import prefix holding eval_groups/ (srlm data import --format oasst).")
    eft.add_argument("--out", required=True, metavar="URI", help="Output prefix: local path, file://… or s3://bucket/prefix.")
    eft.add_argument("--samples", type=int, metavar="K", help="Judgments sampled per response (default: judge.num_samples).")
    eft.add_argument("--eval-fraction", type=float, default=DEFAULT_EVAL_FRACTION, metavar="F",
                     help=f"Share of groups held out for evaluation, chosen by a hash of group_id (default {DEFAULT_EVAL_FRACTION}).")
    eft.add_argument("--seed", type=int, default=0, metavar="S", help="Seed of the choice among agreeing judgments and of balancing (default 0).")
    eft.add_argument("--max-groups", type=int, metavar="N", help="Use only the first N groups of the table.")
    eft.add_argument("--all-turns", action="store_true", help="Include groups deeper in conversations (default: first turns, as the paper).")
    eft.add_argument("--no-balance", action="store_true", help="Keep every agreeing judgment (default: trim the dominant score).")
    eft.add_argument("--force", action="store_true", help="Replace committed output instead of keeping it.")
    eft.add_argument("--allow-empty", action="store_true", help="Commit an empty EFT table when no judgment agrees (default: an error).")
    eft.add_argument("--json", action="store_true", help="Print the summary as one JSON object.")
    group = eft.add_argument_group("configuration")
    group.add_argument("--config", metavar="YAML", help="Config file (backend, judge and model sections are used).")
    add_set_option(group)
    add_backend_option(group)
    group.add_argument("--run", metavar="URI", help="Run URI, to resolve --model M<k>.")
    group.add_argument("--store", metavar="URI", help="Store root (store.uri), and where --run is looked up by name.")
    eft.set_defaults(func=run_build_eft_command)


def run_build_eft_command(args: argparse.Namespace) -> int:
    import dataclasses

    from srlm.config import load_config, parse_set_options
    from srlm.data.eft_from_rankings import BuildEftRequest, BuildEftSettings, build_eft
    from srlm.steps.context import StepContext

    overrides = parse_set_options(args.overrides)
    if args.backend:
        overrides["backend.backend"] = args.backend
    if args.store:
        overrides["store.uri"] = args.store
    ctx = StepContext.from_config(load_config(args.config, overrides))
    if args.run:
        from srlm.evaluation.runs import layout_for, require_run

        ctx = dataclasses.replace(ctx, layout=require_run(layout_for(args.run, args.store)))
    judge = ctx.config.judge
    settings = BuildEftSettings(
        samples=args.samples if args.samples is not None else judge.num_samples,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        max_groups=args.max_groups,
        first_turn_only=not args.all_turns,
        balance=not args.no_balance,
        template=judge.template,
        temperature=judge.temperature,
        top_p=judge.top_p,
        max_new_tokens=judge.max_new_tokens,
        injection_guard=judge.injection_guard,
    )
    request = BuildEftRequest(args.model, args.groups, args.out, settings, force=args.force, allow_empty=args.allow_empty)
    summary = build_eft(ctx, request)
    print(json.dumps(summary.to_dict(), ensure_ascii=False) if args.json else summary.to_text())
    return 0


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
