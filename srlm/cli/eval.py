"""CLI group 'eval': `srlm eval winrate / head2head / reward-model / monitors`.

Each command prints a one-screen summary (or one JSON object with --json). With --checkpoint (and --run), the
result is also committed to the run's eval_results table; a committed result is kept while the evaluated model,
data and settings are unchanged (unless --force), so rerunning (an Airflow backfill, say) is a no-op. The work
is done by srlm.evaluation.use_cases; this module parses the options and prints.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from srlm.cli.common import add_backend_option, add_set_option, command_group


def register(subparsers) -> None:
    commands = command_group(
        subparsers, "eval", "Evaluate: win rates (raw + LC), head-to-head, reward-model metrics, monitors."
    )

    wr = commands.add_parser(
        "winrate",
        help="AlpacaEval-style win rate, standard error and length-controlled win rate of annotation sets.",
        description=(
            "Reads AlpacaEval-format annotations (JSON list, .json.gz, JSON lines, Parquet, an `annotations` store "
            "table, or a directory of them; output_1 = baseline, output_2 = model, preference in [1, 2]) and "
            "reports the AlpacaEval 2.0 figures. The length-controlled win rate comes from a GLM fitted jointly over "
            "all given sets sharing the baseline (instruction difficulty needs at least two sets: pass the other "
            "models' annotation files with --difficulty-from)."
        ),
    )
    wr.add_argument("--annotations", required=True, nargs="+", metavar="PATH", help="Annotation file(s), directory or store URI.")
    wr.add_argument(
        "--difficulty-from", nargs="+", default=["auto"], metavar="PATH",
        help="More annotation sets (same baseline) used only to estimate instruction difficulty for the LC fit. "
        "Default 'auto': the other annotation sets next to each --annotations file (AlpacaEval keeps one file per "
        "model in one folder); 'none': only the given sets.",
    )
    wr.add_argument("--no-length-control", action="store_true", help="Skip the length-controlled GLM.")
    wr.add_argument(
        "--allow-length-only-fit", action="store_true",
        help="Accept a length-only GLM when the --difficulty-from sets share no instruction with the annotations "
        "(default: an error).",
    )
    wr.add_argument(
        "--difficulty-prior-sd", type=float, default=None, metavar="SD",
        help="Standard deviation of the Gaussian prior on instruction difficulty (logit scale; default 20, nearly flat).",
    )
    wr.add_argument("--compare", metavar="CSV", help="A published leaderboard CSV: report matches and the LC mean absolute difference.")
    _finish(wr, run_winrate, config=False)

    h2h = commands.add_parser(
        "head2head",
        help="Judge system A against system B on the same prompts, in both orders (A wins / tie / B wins).",
        description=(
            "A and B are models (alias, HF directory, checkpoint URI, or a checkpoint id like M1 with --run), whose "
            "responses are generated here, or existing responses (a candidates table, or an outputs file with "
            "instruction/output). Each prompt is judged twice with the responses swapped; disagreement or an "
            "unparsed verdict is a tie. The annotations (B = output_1 baseline, A = output_2) can be written with "
            "--out and read by `srlm eval winrate`."
        ),
    )
    h2h.add_argument("--a", required=True, metavar="MODEL_OR_OUTPUTS", help="System A (the one under evaluation).")
    h2h.add_argument("--b", required=True, metavar="MODEL_OR_OUTPUTS", help="System B (the baseline).")
    h2h.add_argument("--prompts", metavar="URI_OR_FILE", help="Prompts table or file (.jsonl/.json/.txt). Default: prompts both output sets share.")
    h2h.add_argument(
        "--judge", required=True, metavar="self|MODEL|URL",
        help="self (model A judges), a model spec (local judge), or an OpenAI-compatible URL / Airflow-style connection URI.",
    )
    h2h.add_argument("--judge-model", metavar="NAME", help="Model name sent to an endpoint judge (or ?model= in the URL).")
    h2h.add_argument("--judge-rps", type=float, metavar="R", help="Endpoint judge: most requests per second (default 2).")
    h2h.add_argument("--judge-concurrency", type=int, metavar="N", help="Endpoint judge: requests in flight (default 4).")
    h2h.add_argument(
        "--judge-cache", metavar="URI",
        help="Where judgments are cached (local dir or s3://…; default ~/.cache/srlm/judgments); 'none' disables.",
    )
    h2h.add_argument(
        "--template", default="pairwise",
        help="Pairwise judge template: shipped name or file (default: pairwise), or 'rubric': a local judge scores "
        "each response with the judge step's template and sampling (judge.*), the higher mean wins.",
    )
    h2h.add_argument(
        "--sampling", choices=("greedy", "config"), default="greedy",
        help="How model systems answer: greedy, or the generate section's temperature/top-p (default greedy).",
    )
    h2h.add_argument("--max-prompts", type=int, metavar="N", help="Use only the first N prompts.")
    h2h.add_argument("--out", metavar="URI", help="Write the annotations table here (committed). With --checkpoint: default <run>/eval/<ckpt>/annotations/vs-<B>.")
    _finish(h2h, run_head2head)

    rm = commands.add_parser(
        "reward-model",
        help="The model's judge scores vs human rankings: pairwise accuracy, exact match, 5-best, Spearman, Kendall.",
        description=(
            "Scores every response of every human-ranked group (eval_groups table, e.g. from `srlm data import "
            "--format oasst`) with the judge template (judge.num_samples samples averaged, the same parser as the "
            "judge step) and compares with the human ranks. See srlm/evaluation/reward_model.py for definitions."
        ),
    )
    rm.add_argument("--model", required=True, metavar="SPEC", help="Judge model: alias, directory, checkpoint URI, or M<k> with --run.")
    rm.add_argument("--data", required=True, metavar="URI", help="eval_groups table, or an import prefix holding eval_groups/.")
    rm.add_argument("--samples", type=int, metavar="K", help="Judge samples per response (judge.num_samples, default 3).")
    rm.add_argument("--max-groups", type=int, metavar="N", help="Evaluate only the first N groups.")
    rm.add_argument("--all-turns", action="store_true", help="Include groups deeper in conversations (default: first turns, as the paper).")
    _finish(rm, run_reward_model)

    mon = commands.add_parser(
        "monitors",
        help="Reward-hacking monitors per iteration: lengths, judge score histogram (all-5 collapse), parse rate, pair length gap, raw vs LC win rate.",
    )
    mon.add_argument("--run", required=True, metavar="URI", help="Run URI (<store>/runs/<name>) or run name with --store.")
    mon.add_argument("--store", metavar="URI", help="Store root, when --run is a name.")
    mon.add_argument("--collapse-threshold", type=float, default=0.8, metavar="F", help="Flag when more than this share of judgments are 5 (default 0.8).")
    mon.add_argument("--json", action="store_true", help="Print one JSON object.")
    mon.add_argument("--record", action="store_true", help="Commit each iteration's monitors to eval_results under its model (M_{t-1}).")
    mon.add_argument("--suite-version", default="v1", help="Version label of the recorded results (default v1).")
    mon.add_argument("--force", action="store_true", help="Replace committed results.")
    mon.set_defaults(func=run_monitors)


def _finish(parser: argparse.ArgumentParser, handler, *, config: bool = True) -> None:
    """The options every evaluation command shares (--json, configuration, recording) and its handler."""
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    if config:
        _config_options(parser)
    _record_options(parser)
    parser.set_defaults(func=handler)


def _config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="YAML", help="Config file (backend, judge, generate and model sections are used).")
    add_set_option(group)
    add_backend_option(group)


def _record_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recording results")
    group.add_argument("--run", metavar="URI", help="Run URI (<store>/runs/<name>) or run name with --store: resolves M<k> and records results.")
    group.add_argument("--store", metavar="URI", help="Store root, when --run is a name.")
    group.add_argument("--checkpoint", metavar="ID", help="Commit the result to eval_results of this checkpoint (needs --run).")
    group.add_argument("--suite-version", default="v1", help="Version label of the recorded result (default v1).")
    group.add_argument("--force", action="store_true", help="Replace a committed result (default: keep it and skip the work).")


# --------------------------------------------------------------------------------------------------- handlers


def run_winrate(args: argparse.Namespace) -> int:
    from srlm.evaluation.use_cases import evaluate_winrate

    target = _result_target(args)
    evaluation = evaluate_winrate(
        args.annotations,
        args.difficulty_from,
        length_control=not args.no_length_control,
        difficulty_prior_sd=args.difficulty_prior_sd,
        leaderboard=args.compare,
        target=target,
        allow_length_only_fit=args.allow_length_only_fit,
    )
    return _print_evaluation(args, evaluation)


def run_head2head(args: argparse.Namespace) -> int:
    from srlm.evaluation.use_cases import JudgeChoice, evaluate_head2head

    ctx = _context(args)
    judge = JudgeChoice(
        spec=args.judge, model=args.judge_model, requests_per_second=args.judge_rps,
        max_concurrency=args.judge_concurrency, cache=args.judge_cache,
    )
    evaluation = evaluate_head2head(
        ctx, args.a, args.b, judge, prompts=args.prompts, template=args.template, sampling=args.sampling,
        max_prompts=args.max_prompts, out=args.out, target=_result_target(args),
    )
    return _print_evaluation(args, evaluation)


def run_reward_model(args: argparse.Namespace) -> int:
    from srlm.evaluation.use_cases import evaluate_reward_model

    evaluation = evaluate_reward_model(
        _context(args), args.model, args.data, num_samples=args.samples, max_groups=args.max_groups,
        all_turns=args.all_turns, target=_result_target(args),
    )
    return _print_evaluation(args, evaluation)


def run_monitors(args: argparse.Namespace) -> int:
    from srlm.evaluation.monitors import MonitorThresholds
    from srlm.evaluation.runs import layout_for, require_run
    from srlm.evaluation.use_cases import evaluate_monitors

    evaluation = evaluate_monitors(
        require_run(layout_for(args.run, args.store)), MonitorThresholds(collapse_threshold=args.collapse_threshold),
        record=args.record, suite_version=args.suite_version, force=args.force,
    )
    return _print_evaluation(args, evaluation)


# --------------------------------------------------------------------------------------------------- helpers


def _print_evaluation(args: argparse.Namespace, evaluation) -> int:
    """One JSON object or the text summary; a reused committed result has already said so and prints nothing."""
    if getattr(evaluation, "reused", False):
        return 0
    print(json.dumps(evaluation.to_dict(), default=_json_default) if args.json else evaluation.to_text())
    return 0


def _context(args: argparse.Namespace):
    """The step context: config (--config, --set, --backend, --store) and the run's layout (--run, else config)."""
    import dataclasses

    from srlm.config import load_config, parse_set_options
    from srlm.steps.context import StepContext

    overrides: dict[str, Any] = parse_set_options(getattr(args, "overrides", None))
    if getattr(args, "backend", None):
        overrides["backend.backend"] = args.backend
    if getattr(args, "store", None):
        overrides["store.uri"] = args.store
    ctx = StepContext.from_config(load_config(getattr(args, "config", None), overrides))
    layout = _run_layout(args)
    return ctx if layout is None else dataclasses.replace(ctx, layout=layout)


def _run_layout(args: argparse.Namespace):
    """The run layout named by --run/--store, or None; --checkpoint needs one (where the result is recorded).
    The run must exist, and a --checkpoint be registered in it."""
    from srlm.errors import ConfigError
    from srlm.evaluation.runs import layout_for, require_checkpoint, require_run

    if getattr(args, "checkpoint", None) and not args.run:
        raise ConfigError("--checkpoint needs --run (where the result is recorded)")
    if not args.run:
        return None
    layout = layout_for(args.run, args.store)
    if getattr(args, "checkpoint", None):
        require_checkpoint(layout, args.checkpoint)
    else:
        require_run(layout)
    return layout


def _result_target(args: argparse.Namespace):
    """Where --checkpoint's result is recorded, or None when nothing is recorded."""
    from srlm.evaluation.results import ResultTarget

    layout = _run_layout(args)
    if layout is None or not args.checkpoint:
        return None
    return ResultTarget(layout, args.checkpoint, args.suite_version, args.force)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
