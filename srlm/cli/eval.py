"""CLI group 'eval': `srlm eval winrate / head2head / reward-model / monitors`.

Each command prints a one-screen summary (or one JSON object with --json). With --checkpoint (and --run), the
result is also committed to the run's eval_results table; a committed result is kept unless --force, so
rerunning (an Airflow backfill, say) is a no-op.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="Evaluate: win rates (raw + LC), head-to-head, reward-model metrics, monitors.")
    ev.set_defaults(func=lambda args: (ev.print_help(), 2)[1])
    commands = ev.add_subparsers(dest="eval_command", metavar="COMMAND")

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
        "--difficulty-prior-sd", type=float, default=None, metavar="SD",
        help="Standard deviation of the Gaussian prior on instruction difficulty (logit scale; default 20, nearly flat).",
    )
    wr.add_argument("--compare", metavar="CSV", help="A published leaderboard CSV: report matches and the LC mean absolute difference.")
    wr.add_argument("--json", action="store_true", help="Print one JSON object.")
    _record_options(wr)
    wr.set_defaults(func=run_winrate)

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
    h2h.add_argument("--template", default="pairwise", help="Pairwise judge template: shipped name or file (default: pairwise).")
    h2h.add_argument(
        "--sampling", choices=("greedy", "config"), default="greedy",
        help="How model systems answer: greedy, or the generate section's temperature/top-p (default greedy).",
    )
    h2h.add_argument("--max-prompts", type=int, metavar="N", help="Use only the first N prompts.")
    h2h.add_argument("--out", metavar="URI", help="Write the annotations table here (committed). With --checkpoint: default <run>/eval/<ckpt>/annotations/vs-<B>.")
    h2h.add_argument("--json", action="store_true", help="Print one JSON object.")
    _config_options(h2h)
    _record_options(h2h)
    h2h.set_defaults(func=run_head2head)

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
    rm.add_argument("--json", action="store_true", help="Print one JSON object.")
    _config_options(rm)
    _record_options(rm)
    rm.set_defaults(func=run_reward_model)

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


def _config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="YAML", help="Config file (backend, judge, generate and model sections are used).")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="Override a config value (repeatable).")
    group.add_argument("--backend", choices=("auto", "vllm", "transformers"), help="Generation backend (backend.backend).")


def _record_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recording results")
    group.add_argument("--run", metavar="URI", help="Run URI (<store>/runs/<name>) or run name with --store: resolves M<k> and records results.")
    group.add_argument("--store", metavar="URI", help="Store root, when --run is a name.")
    group.add_argument("--checkpoint", metavar="ID", help="Commit the result to eval_results of this checkpoint (needs --run).")
    group.add_argument("--suite-version", default="v1", help="Version label of the recorded result (default v1).")
    group.add_argument("--force", action="store_true", help="Replace a committed result (default: keep it and skip the work).")


# --------------------------------------------------------------------------------------------------- handlers


def run_winrate(args: argparse.Namespace) -> int:
    from srlm.evaluation.annotations import load_many
    from srlm.evaluation.length_control import DEFAULT_DIFFICULTY_PRIOR_SD
    from srlm.evaluation.results import EvalRecord
    from srlm.evaluation.winrate import compare_to_leaderboard, evaluate_win_rates, read_leaderboard

    layout = _record_layout(args)
    if layout is not None and _already_recorded(layout, args, "winrate"):
        return 0
    targets = load_many(args.annotations)
    report = evaluate_win_rates(
        targets,
        _difficulty_sets(args.difficulty_from, args.annotations),
        length_control=not args.no_length_control,
        difficulty_prior_sd=args.difficulty_prior_sd or DEFAULT_DIFFICULTY_PRIOR_SD,
    )
    payload = report.to_dict()
    if args.compare:
        payload["comparison"] = compare_to_leaderboard(report.results, read_leaderboard(args.compare))
    if layout is not None:
        if len(report.results) != 1:
            from srlm.errors import ConfigError

            raise ConfigError("--checkpoint records one model's win rate; the annotations hold several models")
        r = report.results[0]
        record = EvalRecord(
            metrics={k: getattr(r, k) for k in ("win_rate", "length_controlled_winrate", "discrete_win_rate", "standard_error", "avg_length")},
            n={"win_rate": r.n_total},
            details={"model": r.model, "baseline": r.baseline, "length_control": payload["length_control"]},
        )
        payload["recorded"] = _record(layout, args, "winrate", record)
    if args.json:
        print(json.dumps(payload, default=_json_default))
    else:
        print(_winrate_text(payload))
    return 0


def run_head2head(args: argparse.Namespace) -> int:
    from srlm.errors import ConfigError
    from srlm.evaluation.head2head import System, compare, fill_responses, is_outputs_source, load_outputs, load_prompts
    from srlm.evaluation.pairwise import load_pairwise_template
    from srlm.evaluation.results import EvalRecord
    from srlm.evaluation.runs import annotations_uri

    config = _config(args)
    layout = _record_layout(args, required=False)
    recording = bool(args.checkpoint)
    if recording and _already_recorded(layout, args, "head2head"):
        return 0
    template = load_pairwise_template(args.template)
    systems = []
    for label, spec in (("A", args.a), ("B", args.b)):
        if is_outputs_source(spec):
            systems.append(System(label=spec, spec=spec, kind="outputs", responses=load_outputs(spec)))
        else:
            systems.append(System(label=spec, spec=spec, kind="model"))
    a, b = systems
    if args.prompts:
        prompts = load_prompts(args.prompts)
    elif a.kind == "outputs" and b.kind == "outputs":
        prompts = [p for p in a.responses if p in b.responses]
    else:
        raise ConfigError("--prompts is needed when a system is a model (its responses are generated for them)")
    if args.max_prompts is not None:
        prompts = prompts[: args.max_prompts]
    if not prompts:
        raise ConfigError("no prompts to compare (are the two output sets about the same prompts?)")

    judge_spec = args.judge
    self_judge = judge_spec == "self"
    if self_judge and a.kind != "model":
        raise ConfigError("--judge self needs system A to be a model (it judges its own comparison)")
    sampling = {"max_new_tokens": config.generate.max_new_tokens}
    if args.sampling == "config":
        sampling.update(temperature=config.generate.temperature, top_p=config.generate.top_p)
    open_model = lambda system: _open_backend(system.spec, config, layout)  # noqa: E731
    kept = fill_responses(systems, prompts, open_model, keep_open=a if self_judge else None, sampling=sampling)
    judge = _make_judge(args, config, layout, kept_backend=kept, a_spec=a.spec)
    try:
        result = compare(a, b, prompts, judge, template=template)
    finally:
        judge.close()
    out = args.out
    if out is None and recording:
        out = annotations_uri(layout, args.checkpoint, f"vs-{_slug(b.label)}")
    if out:
        from srlm.store import artifacts

        artifacts.write_table(out, result.annotations, "annotations", force=True)
        result.annotations_uri = out
    payload = result.to_dict()
    if recording:
        record = EvalRecord(
            metrics={"a_win_pct": result.a_win_pct, "tie_pct": result.tie_pct, "b_win_pct": result.b_win_pct,
                     "order_parse_rate": result.order_parse_rate, "order_agreement": result.order_agreement},
            n={"a_win_pct": result.n},
            details={"a": a.label, "b": b.label, "judge": result.judge, "annotations_uri": out},
        )
        payload["recorded"] = _record(layout, args, "head2head", record)
    print(json.dumps(payload, default=_json_default) if args.json else result.to_text())
    return 0


def run_reward_model(args: argparse.Namespace) -> int:
    from srlm.errors import DataError
    from srlm.evaluation.results import EvalRecord
    from srlm.evaluation.reward_model import groups_from_table, reward_model_metrics, score_groups
    from srlm.judging.template import load_template
    from srlm.store import artifacts
    from srlm.store.uri import join_uri

    config = _config(args)
    layout = _record_layout(args, required=False)
    if args.checkpoint and _already_recorded(layout, args, "reward_model"):
        return 0
    data = args.data
    if not artifacts.is_committed(data) and artifacts.is_committed(join_uri(data, "eval_groups")):
        data = join_uri(data, "eval_groups")
    groups = groups_from_table(artifacts.read_table(data, "eval_groups"), first_turn_only=not args.all_turns)
    if args.max_groups is not None:
        groups = groups[: args.max_groups]
    if not groups:
        raise DataError(f"{data}: no human-ranked groups to evaluate" + ("" if args.all_turns else " (first turns; try --all-turns)"))
    judge_cfg = config.judge
    samples = args.samples or judge_cfg.num_samples
    with _open_backend(args.model, config, layout) as backend:
        score_groups(
            groups, backend, template=load_template(judge_cfg.template), num_samples=samples,
            temperature=judge_cfg.temperature, top_p=judge_cfg.top_p, max_new_tokens=judge_cfg.max_new_tokens,
        )
    metrics = reward_model_metrics(groups)
    payload = {"model": args.model, "data": data, "num_samples": samples, **metrics.to_dict()}
    if args.checkpoint:
        record = EvalRecord(
            metrics=metrics.headline(),
            n={"pairwise_accuracy": metrics.n_pairs, "exact_match": metrics.n_groups_ranked, "five_best": metrics.n_perfect_five},
            details={"model": args.model, "data": data, "num_samples": samples, "score_histogram": metrics.score_histogram,
                     "n_responses_too_long": metrics.n_responses_too_long},
        )
        payload["recorded"] = _record(layout, args, "reward_model", record)
    print(json.dumps(payload, default=_json_default) if args.json else f"{args.model} on {data}\n{metrics.to_text()}")
    return 0


def run_monitors(args: argparse.Namespace) -> int:
    from srlm.evaluation.monitors import MonitorThresholds, compute_monitors
    from srlm.evaluation.results import EvalRecord, write_eval_results
    from srlm.evaluation.runs import layout_for

    layout = layout_for(args.run, args.store)
    report = compute_monitors(layout, MonitorThresholds(collapse_threshold=args.collapse_threshold))
    payload = report.to_dict()
    if args.record:
        recorded = []
        for it in report.iterations:
            c, j, p = it.candidates or {}, it.judgments or {}, it.pairs or {}
            metrics = {
                "mean_tokens": c.get("mean_tokens"), "mean_chars": c.get("mean_chars"), "truncated_rate": c.get("truncated_rate"),
                "judge_parse_rate": j.get("parse_rate"), "five_rate": j.get("five_rate"), "mean_score": j.get("mean_score"),
                "chosen_longer_rate": p.get("chosen_longer_rate"), "mean_char_gap": p.get("mean_char_gap"),
            }
            record = EvalRecord(metrics=metrics, n={"mean_tokens": c.get("n"), "five_rate": j.get("n"), "chosen_longer_rate": p.get("n")},
                                details={"iteration": it.iteration, "histogram": j.get("histogram")})
            recorded.append(write_eval_results(layout, it.model, "monitors", args.suite_version, record, force=args.force))
        payload["recorded"] = recorded
    print(json.dumps(payload, default=_json_default) if args.json else report.to_text())
    return 0


# --------------------------------------------------------------------------------------------------- helpers


def _difficulty_sets(option: list[str], annotations: list[str]):
    from srlm.evaluation.annotations import load_many, sibling_annotation_sets

    if option == ["none"]:
        return []
    if option == ["auto"]:
        return [s for source in annotations for s in sibling_annotation_sets(source)]
    return load_many(option)


def _config(args: argparse.Namespace):
    from srlm.config import load_config, parse_set_options

    overrides: dict[str, Any] = parse_set_options(getattr(args, "overrides", None))
    if getattr(args, "backend", None):
        overrides["backend.backend"] = args.backend
    if getattr(args, "store", None):
        overrides["store.uri"] = args.store
    return load_config(getattr(args, "config", None), overrides)


def _record_layout(args: argparse.Namespace, required: bool = True):
    """The run layout named by --run/--store; with --checkpoint it is mandatory."""
    from srlm.errors import ConfigError
    from srlm.evaluation.runs import layout_for

    if getattr(args, "checkpoint", None) and not args.run:
        raise ConfigError("--checkpoint needs --run (where the result is recorded)")
    if not args.run:
        return None
    layout = layout_for(args.run, args.store)
    return layout if (args.checkpoint or not required) else None


def _already_recorded(layout, args: argparse.Namespace, suite: str) -> bool:
    from srlm.store import artifacts

    uri = layout.eval_result(args.checkpoint, suite, args.suite_version)
    if not args.force and artifacts.is_committed(uri):
        print(f"{uri}: already committed; nothing to do (use --force to recompute)")
        return True
    return False


def _record(layout, args: argparse.Namespace, suite: str, record) -> str:
    from srlm.evaluation.results import write_eval_results

    return write_eval_results(layout, args.checkpoint, suite, args.suite_version, record, force=args.force)


def _model_path(spec: str, config, layout) -> str:
    """A local model directory for a spec; a checkpoint id (M1) is looked up in the run's registry."""
    from srlm.errors import ModelError
    from srlm.models.resolve import resolve_model

    if layout is not None and len(spec) > 1 and spec[0] == "M" and spec[1:].split("-", 1)[0].isdigit():
        from srlm.training.registry import get_checkpoint

        record = get_checkpoint(layout, spec)
        if record is None:
            raise ModelError(f"checkpoint {spec} is not registered in run {layout.run!r}")
        spec = record.uri
    return resolve_model(spec, config.model.cache_dir)


def _open_backend(spec: str, config, layout):
    from srlm.generation.factory import open_backend

    return open_backend(_model_path(spec, config, layout), config.backend, dtype=config.model.dtype)


def _make_judge(args: argparse.Namespace, config, layout, *, kept_backend, a_spec: str):
    from srlm.evaluation.judges import BackendJudge, EndpointJudge, endpoint_config_from_connection, local_model_identity
    from srlm.evaluation.judgment_cache import JudgmentCache, default_cache_uri

    cache_uri = args.judge_cache or default_cache_uri()
    cache = None if cache_uri.lower() == "none" else JudgmentCache(cache_uri)
    spec = args.judge
    if spec.startswith(("http://", "https://")) or "://" in spec and not spec.startswith(("s3://", "file://")):
        endpoint = endpoint_config_from_connection(
            spec, model=args.judge_model, requests_per_second=args.judge_rps, max_concurrency=args.judge_concurrency
        )
        return EndpointJudge(endpoint, cache=cache)
    judge_spec = a_spec if spec == "self" else spec
    backend = kept_backend if spec == "self" else _open_backend(judge_spec, config, layout)
    path = _model_path(judge_spec, config, layout)
    return BackendJudge(
        backend, identity=local_model_identity(path), max_new_tokens=config.judge.max_new_tokens, cache=cache,
        owns_backend=True,
    )


def _winrate_text(payload: dict) -> str:
    header = f"{'model':<40} {'win rate':>9} {'± se':>6} {'LC':>7} {'discrete':>9} {'wins':>5} {'base':>5} {'draws':>5} {'n':>5} {'avg len':>8}"
    lines = [header, "-" * len(header)]
    for r in payload["models"]:
        se = "" if r["standard_error"] is None else f"{r['standard_error']:.2f}"
        lc = r["length_controlled_winrate"]
        lc_text = "n/a" if lc is None or (isinstance(lc, float) and math.isnan(lc)) else f"{lc:.2f}"
        lines.append(
            f"{r['model'][:40]:<40} {r['win_rate']:>9.2f} {se:>6} {lc_text:>7} {r['discrete_win_rate']:>9.2f} "
            f"{r['n_wins']:>5} {r['n_wins_base']:>5} {r['n_draws']:>5} {r['n_total']:>5} {r['avg_length']:>8}"
        )
    for fit in payload["length_control"]:
        coef = fit["length_coefficient"]
        lines.append(
            f"LC fit vs {fit['baseline']}: {fit['method']} over {fit['n_sets']} set(s), {fit['n_rows']} rows, "
            f"difficulty for {fit['n_instructions_with_difficulty']} instructions, length coefficient "
            + ("n/a" if coef is None else f"{coef:.3f}")
        )
        if fit["method"] == "length-only":
            lines.append("  (no instruction difficulty: pass other models' annotation sets with --difficulty-from)")
        elif fit["n_sets"] < 4:
            lines.append(f"  (difficulty from only {fit['n_sets']} sets: more sets with this baseline give a steadier LC)")
    comparison = payload.get("comparison")
    if comparison:
        lines.append(
            f"vs published leaderboard: raw figures match for "
            f"{sum(m['raw_match'] for m in comparison['models'])}/{comparison['n_compared']} models; "
            f"LC mean absolute difference {_fmt(comparison['lc_mean_abs_difference'])} points"
        )
        for m in comparison["models"]:
            if m["mismatches"]:
                lines.append(f"  {m['model']}: " + "; ".join(m["mismatches"]))
    if payload.get("recorded"):
        lines.append(f"recorded: {payload['recorded']}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/").rsplit("/", 1)[-1])[:60] or "baseline"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
