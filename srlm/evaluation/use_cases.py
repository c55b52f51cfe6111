"""The evaluation use cases: win rates, head-to-head, reward-model metrics and monitors, optionally recorded.

Each function takes plain arguments (and, where a model is involved, a StepContext for the config, the run's
layout and where to print), does the work, and returns a result with `to_dict()` (what `srlm eval … --json`
prints) and `to_text()` (the one-screen summary). With a ResultTarget the result is also committed to the
run's eval_results; a result committed by the same producer (same evaluated model, data and suite settings) is
kept and nothing is computed (`reused`), so an Airflow backfill can evaluate the same checkpoint any number of
times, while a retrained checkpoint is evaluated again. `srlm eval` and srlm.evaluation.suites call these.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from srlm.errors import ConfigError, DataError
from srlm.evaluation.results import EvalRecord, ResultTarget, committed_result, record_result, result_producer

if TYPE_CHECKING:
    from srlm.evaluation.head2head import Head2HeadResult
    from srlm.evaluation.monitors import MonitorReport, MonitorThresholds
    from srlm.evaluation.reward_model import RewardModelMetrics
    from srlm.steps.checkpoints import ModelRef
    from srlm.steps.context import StepContext
    from srlm.store.layout import RunLayout

Echo = Callable[[str], None]


def already_committed_message(uri: str) -> str:
    return f"{uri}: already committed; nothing to do (use --force to recompute)"


# ------------------------------------------------------------------------------------------------ reward model


@dataclass
class RewardModelEvaluation:
    """The judge's scores vs human rankings; `metrics` is None when a committed result was reused."""

    model: str
    data: str
    num_samples: int
    metrics: RewardModelMetrics | None = None
    recorded: str | None = None
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "data": self.data, "num_samples": self.num_samples}
        payload.update(self.metrics.to_dict() if self.metrics else {})
        if self.recorded:
            payload["recorded"] = self.recorded
        return payload

    def to_text(self) -> str:
        if self.metrics is None:
            return already_committed_message(self.recorded or "")
        return f"{self.model} on {self.data}\n{self.metrics.to_text()}"


def eval_groups_source(data: str) -> str:
    """An eval_groups table, or the import prefix holding one at <data>/eval_groups."""
    from srlm.store import artifacts
    from srlm.store.uri import join_uri

    if not artifacts.is_committed(data) and artifacts.is_committed(join_uri(data, "eval_groups")):
        return join_uri(data, "eval_groups")
    return data


def evaluate_reward_model(
    ctx: StepContext, model: str, data: str, *, num_samples: int | None = None, max_groups: int | None = None,
    all_turns: bool = False, target: ResultTarget | None = None,
) -> RewardModelEvaluation:
    """Score every response of every human-ranked group with `model` as judge and compare with the human ranks."""
    from srlm.evaluation.reward_model import METRICS_VERSION, groups_from_table, reward_model_metrics, score_groups
    from srlm.judging.rubric import RubricSampling
    from srlm.steps.reuse import fingerprint
    from srlm.store import artifacts

    judge = ctx.config.judge
    samples = num_samples or judge.num_samples
    data = eval_groups_source(data)
    evaluation = RewardModelEvaluation(model=model, data=data, num_samples=samples)
    model_ref = model_ref_for(ctx, model)
    producer = None
    if target is not None:
        settings = {
            "num_samples": samples, "template": judge.template, "temperature": judge.temperature,
            "top_p": judge.top_p, "max_new_tokens": judge.max_new_tokens, "first_turn_only": not all_turns,
            "max_groups": max_groups, "max_model_len": ctx.config.backend.max_model_len,
            "min_parsed_samples": judge.min_parsed_samples, "metrics_version": METRICS_VERSION,
            "injection_guard": judge.injection_guard,
        }
        inputs = {"model": model_ref.as_input(), "eval_groups": fingerprint(data)}
        producer = result_producer(
            target.layout, target.checkpoint, "reward_model", target.suite_version, inputs=inputs, settings=settings
        )
        if _reused(evaluation, target, "reward_model", producer, ctx.echo):
            return evaluation
    groups = groups_from_table(artifacts.read_table(data, "eval_groups"), first_turn_only=not all_turns)
    if max_groups is not None:
        groups = groups[:max_groups]
    if not groups:
        raise DataError(f"{data}: no human-ranked groups to evaluate" + ("" if all_turns else " (first turns; try --all-turns)"))
    with open_model_backend(ctx, model_ref) as backend:
        score_groups(groups, backend, RubricSampling.of_judge(judge, num_samples=samples))
    metrics = evaluation.metrics = reward_model_metrics(groups, min_parsed_samples=judge.min_parsed_samples)
    if target is not None:
        record = EvalRecord(
            metrics=metrics.headline(),
            n={"pairwise_accuracy": metrics.n_pairs, "pairwise_accuracy_tie_half": metrics.n_pairs,
               "exact_match": metrics.n_groups_ranked, "five_best": metrics.n_perfect_five},
            details={"model": model, "data": data, "num_samples": samples, "score_histogram": metrics.score_histogram,
                     "n_responses_too_long": metrics.n_responses_too_long,
                     "n_responses_partly_parsed": metrics.n_responses_partly_parsed},
        )
        evaluation.recorded = record_result(target, "reward_model", record, producer)
    return evaluation


# ------------------------------------------------------------------------------------------------ monitors


@dataclass
class MonitorsEvaluation:
    """The run's monitors, and (when recorded) each iteration's result URI, under the model that made the data."""

    report: MonitorReport
    recorded: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        payload = self.report.to_dict()
        if self.recorded is not None:
            payload["recorded"] = self.recorded
        return payload

    def to_text(self) -> str:
        return self.report.to_text()


def evaluate_monitors(
    layout: RunLayout,
    thresholds: MonitorThresholds | None = None,
    *,
    record: bool = False,
    suite_version: str = "v1",
    force: bool = False,
    echo: Echo | None = None,
) -> MonitorsEvaluation:
    """Compute the run's monitors; with `record`, commit iteration t's under M_{t-1} (the model whose data it is)."""
    from srlm.evaluation.monitors import compute_monitors

    report = compute_monitors(layout, thresholds)
    evaluation = MonitorsEvaluation(report)
    if record:
        evaluation.recorded = [
            _record_iteration_monitors(layout, it, suite_version, force, echo) for it in report.iterations
        ]
    return evaluation


def _record_iteration_monitors(layout: RunLayout, it: Any, suite_version: str, force: bool, echo: Echo | None) -> str:
    from srlm.steps.reuse import fingerprint
    from srlm.store import artifacts
    from srlm.training.registry import get_checkpoint

    t = it.iteration
    data = {"candidates": layout.candidates(t), "judgments": layout.judgments(t), "pairs": layout.pairs(t)}
    inputs: dict[str, Any] = {name: fingerprint(uri) for name, uri in data.items() if artifacts.is_committed(uri)}
    registered = get_checkpoint(layout, it.model)
    if registered is not None:
        inputs["model"] = fingerprint(registered.uri)
    target = ResultTarget(layout, it.model, suite_version, force)
    producer = result_producer(layout, it.model, "monitors", suite_version, inputs=inputs, settings={"iteration": t})
    committed = committed_result(target, "monitors", producer, echo=echo)
    if committed is not None:
        return committed
    c, j, p = it.candidates or {}, it.judgments or {}, it.pairs or {}
    metrics = {
        "mean_tokens": c.get("mean_tokens"), "mean_chars": c.get("mean_chars"), "truncated_rate": c.get("truncated_rate"),
        "judge_parse_rate": j.get("parse_rate"), "five_rate": j.get("five_rate"), "mean_score": j.get("mean_score"),
        "chosen_longer_rate": p.get("chosen_longer_rate"), "mean_char_gap": p.get("mean_char_gap"),
    }
    record = EvalRecord(
        metrics=metrics,
        n={"mean_tokens": c.get("n"), "five_rate": j.get("n"), "chosen_longer_rate": p.get("n")},
        details={"iteration": t, "histogram": j.get("histogram")},
    )
    return record_result(target, "monitors", record, producer)


# ------------------------------------------------------------------------------------------------ win rate


@dataclass
class WinRateEvaluation:
    """AlpacaEval 2.0 figures of annotation sets (the `srlm eval winrate --json` payload), or a reused result."""

    payload: dict[str, Any] = field(default_factory=dict)
    recorded: str | None = None
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.payload, **({"recorded": self.recorded} if self.recorded else {})}

    def to_text(self) -> str:
        from srlm.evaluation.winrate import win_rates_text

        if self.reused:
            return already_committed_message(self.recorded or "")
        return win_rates_text(self.to_dict())


def evaluate_winrate(
    annotations: Sequence[str],
    difficulty_from: Sequence[str] = ("auto",),
    *,
    length_control: bool = True,
    difficulty_prior_sd: float | None = None,
    leaderboard: str | None = None,
    target: ResultTarget | None = None,
    echo: Echo | None = None,
    allow_length_only_fit: bool = False,
) -> WinRateEvaluation:
    """Raw and length-controlled win rates of `annotations`; `difficulty_from` is "auto" (sibling sets), "none" or
    more annotation sources used only for instruction difficulty; `leaderboard` a published CSV to compare with."""
    from srlm.evaluation.annotations import load_many
    from srlm.evaluation.length_control import DEFAULT_DIFFICULTY_PRIOR_SD
    from srlm.evaluation.winrate import compare_to_leaderboard, evaluate_win_rates, read_leaderboard

    evaluation = WinRateEvaluation()
    producer = None
    if target is not None:
        settings = {
            "difficulty_from": list(difficulty_from), "length_control": length_control,
            "difficulty_prior_sd": difficulty_prior_sd,
        }
        inputs = {
            "annotations": [source_fingerprint(source) for source in annotations],
            "difficulty_from": _difficulty_fingerprints(difficulty_from, annotations),
        }
        producer = result_producer(
            target.layout, target.checkpoint, "winrate", target.suite_version, inputs=inputs, settings=settings
        )
        if _reused(evaluation, target, "winrate", producer, echo):
            return evaluation
    report = evaluate_win_rates(
        load_many(annotations),
        difficulty_sets(difficulty_from, annotations),
        length_control=length_control,
        difficulty_prior_sd=difficulty_prior_sd or DEFAULT_DIFFICULTY_PRIOR_SD,
        allow_length_only_fit=allow_length_only_fit,
    )
    evaluation.payload = report.to_dict()
    if leaderboard:
        evaluation.payload["comparison"] = compare_to_leaderboard(report.results, read_leaderboard(leaderboard))
    if target is not None:
        if len(report.results) != 1:
            raise ConfigError("--checkpoint records one model's win rate; the annotations hold several models")
        r = report.results[0]
        record = EvalRecord(
            metrics={k: getattr(r, k) for k in ("win_rate", "length_controlled_winrate", "discrete_win_rate", "standard_error", "avg_length")},
            n={"win_rate": r.n_total},
            details={"model": r.model, "baseline": r.baseline, "length_control": evaluation.payload["length_control"]},
        )
        evaluation.recorded = record_result(target, "winrate", record, producer)
    return evaluation


def difficulty_sets(option: Sequence[str], annotations: Sequence[str]) -> list:
    """The annotation sets that only inform instruction difficulty: "none", "auto" (siblings) or given sources."""
    from srlm.evaluation.annotations import load_many, sibling_annotation_sets

    if list(option) == ["none"]:
        return []
    if list(option) == ["auto"]:
        return [s for source in annotations for s in sibling_annotation_sets(source)]
    return load_many(option)


def _difficulty_fingerprints(option: Sequence[str], annotations: Sequence[str]) -> list[dict[str, Any]]:
    """The identity of what informs instruction difficulty ("auto": the folders next to each annotation set)."""
    from srlm.evaluation.sources import local_file_path

    if list(option) == ["none"]:
        return []
    if list(option) != ["auto"]:
        return [source_fingerprint(source) for source in option]
    folders = []
    for source in annotations:
        path = local_file_path(source)
        folders.append(str(path.parent) if path is not None else str(source).rstrip("/").rsplit("/", 1)[0])
    return [source_fingerprint(folder) for folder in folders]


# ------------------------------------------------------------------------------------------------ head-to-head


@dataclass(frozen=True)
class JudgeChoice:
    """Who judges a head-to-head: "self" (model A), a model spec (a local judge), or an OpenAI-compatible URL /
    Airflow-style connection URI; `cache` is where judgments are cached ("none" disables, None the default)."""

    spec: str
    model: str | None = None
    requests_per_second: float | None = None
    max_concurrency: int | None = None
    cache: str | None = None

    @property
    def is_endpoint(self) -> bool:
        from srlm.store.uri import is_local, is_s3

        return not (is_local(self.spec) or is_s3(self.spec))


@dataclass
class Head2HeadEvaluation:
    """A against B judged in both orders; `result` is None when a committed result was reused."""

    result: Head2HeadResult | None = None
    recorded: str | None = None
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        payload = self.result.to_dict() if self.result else {}
        if self.recorded:
            payload["recorded"] = self.recorded
        return payload

    def to_text(self) -> str:
        return self.result.to_text() if self.result else already_committed_message(self.recorded or "")


def evaluate_head2head(
    ctx: StepContext,
    a: str,
    b: str,
    judge: JudgeChoice,
    *,
    prompts: str | None = None,
    template: str = "pairwise",
    sampling: str = "greedy",
    max_prompts: int | None = None,
    out: str | None = None,
    target: ResultTarget | None = None,
) -> Head2HeadEvaluation:
    """Judge system A against system B (models, whose responses are generated here, or existing outputs)."""
    from srlm.evaluation.head2head import System, compare, fill_responses, is_outputs_source, load_outputs, load_prompts
    from srlm.evaluation.judges import RUBRIC
    from srlm.evaluation.pairwise import load_pairwise_template
    from srlm.evaluation.runs import annotations_uri

    systems = [
        System(label=spec, spec=spec, kind="outputs") if is_outputs_source(spec) else System(label=spec, spec=spec, kind="model")
        for spec in (a, b)
    ]
    system_a, system_b = systems
    self_judge = judge.spec == "self"
    if self_judge and system_a.kind != "model":
        raise ConfigError("--judge self needs system A to be a model (it judges its own comparison)")
    if out is None and target is not None:
        out = annotations_uri(target.layout, target.checkpoint, f"vs-{slug(system_b.label)}")
    evaluation = Head2HeadEvaluation()
    producer = None
    if target is not None:
        settings = {
            "template": template, "sampling": sampling, "max_prompts": max_prompts, "out": out,
            "max_new_tokens": ctx.config.generate.max_new_tokens, "judge_max_new_tokens": ctx.config.judge.max_new_tokens,
            **({"temperature": ctx.config.generate.temperature, "top_p": ctx.config.generate.top_p} if sampling == "config" else {}),
            **({"rubric": _rubric_settings(ctx)} if template == RUBRIC else {}),
        }
        inputs = {
            "a": _system_fingerprint(ctx, system_a), "b": _system_fingerprint(ctx, system_b),
            "prompts": source_fingerprint(prompts) if prompts else None, "judge": _judge_fingerprint(ctx, judge, a),
        }
        producer = result_producer(
            target.layout, target.checkpoint, "head2head", target.suite_version, inputs=inputs, settings=settings
        )
        if _reused(evaluation, target, "head2head", producer, ctx.echo):
            return evaluation
    pairwise_template = None if template == RUBRIC else load_pairwise_template(template)
    for system in systems:
        if system.kind == "outputs":
            system.responses = load_outputs(system.spec)
    if prompts:
        prompt_list = load_prompts(prompts)
    elif system_a.kind == "outputs" and system_b.kind == "outputs":
        prompt_list = [p for p in system_a.responses if p in system_b.responses]
    else:
        raise ConfigError("--prompts is needed when a system is a model (its responses are generated for them)")
    if max_prompts is not None:
        prompt_list = prompt_list[:max_prompts]
    if not prompt_list:
        raise ConfigError("no prompts to compare (are the two output sets about the same prompts?)")

    generation = {"max_new_tokens": ctx.config.generate.max_new_tokens}
    if sampling == "config":
        generation.update(temperature=ctx.config.generate.temperature, top_p=ctx.config.generate.top_p)
    kept = fill_responses(
        systems, prompt_list, lambda system: open_model_backend(ctx, model_ref_for(ctx, system.spec)),
        keep_open=system_a if self_judge else None, sampling=generation,
    )
    pairwise_judge = make_judge(ctx, judge, kept_backend=kept, a_spec=system_a.spec, rubric=template == RUBRIC)
    try:
        result = compare(system_a, system_b, prompt_list, pairwise_judge, template=pairwise_template)
    finally:
        pairwise_judge.close()
    evaluation.result = result
    if out:
        from srlm.store import artifacts

        artifacts.write_table(out, result.annotations, "annotations", force=True)
        result.annotations_uri = out
    if target is not None:
        record = EvalRecord(
            metrics={"a_win_pct": result.a_win_pct, "tie_pct": result.tie_pct, "b_win_pct": result.b_win_pct,
                     "order_parse_rate": result.order_parse_rate, "order_agreement": result.order_agreement,
                     "position_consistency": result.position_consistency,
                     "first_position_rate": result.first_position_rate},
            n={"a_win_pct": result.n},
            details={"a": system_a.label, "b": system_b.label, "judge": result.judge, "annotations_uri": out,
                     "comparison": result.comparison},
        )
        evaluation.recorded = record_result(target, "head2head", record, producer)
    return evaluation


def _rubric_settings(ctx: StepContext) -> dict[str, Any]:
    """What a rubric comparison depends on: the judge step's template and sampling (srlm.config.JudgeConfig)."""
    cfg = ctx.config.judge
    return {
        "template": cfg.template, "num_samples": cfg.num_samples, "required_parsed": cfg.required_parsed_samples,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "injection_guard": cfg.injection_guard,
    }


def make_judge(ctx: StepContext, judge: JudgeChoice, *, kept_backend: Any, a_spec: str, rubric: bool = False):
    """The pairwise judge `judge` names: an endpoint judge, or a local model (model A's open backend for self);
    with `rubric`, a local model comparing by the judge step's additive rubric (RubricJudge)."""
    from srlm.evaluation.judges import (
        RUBRIC,
        BackendJudge,
        EndpointJudge,
        RubricJudge,
        endpoint_config_from_connection,
        local_model_identity,
    )
    from srlm.evaluation.judgment_cache import JudgmentCache, default_cache_uri
    from srlm.judging.rubric import RubricSampling

    cache_uri = judge.cache or default_cache_uri()
    cache = None if cache_uri.lower() == "none" else JudgmentCache(cache_uri)
    if judge.is_endpoint and rubric:
        raise ConfigError(
            f"--template {RUBRIC}: scores with a local model's judge (self or a model spec), not with the endpoint "
            f"judge {judge.spec!r}; use the pairwise template with an endpoint"
        )
    if judge.is_endpoint:
        endpoint = endpoint_config_from_connection(
            judge.spec, model=judge.model, requests_per_second=judge.requests_per_second,
            max_concurrency=judge.max_concurrency,
        )
        return EndpointJudge(endpoint, cache=cache)
    self_judge = judge.spec == "self"
    model = model_ref_for(ctx, a_spec if self_judge else judge.spec)
    backend = kept_backend if self_judge else open_model_backend(ctx, model)
    identity = local_model_identity(local_model_path_of(ctx, model))
    if rubric:
        cfg = ctx.config.judge
        return RubricJudge(
            backend, identity=identity, sampling=RubricSampling.of_judge(cfg), template_name=cfg.template,
            required_parsed=cfg.required_parsed_samples, owns_backend=True,
        )
    return BackendJudge(
        backend, identity=identity,
        max_new_tokens=ctx.config.judge.max_new_tokens, cache=cache, owns_backend=True,
    )


# ------------------------------------------------------------------------------------------------ shared helpers


def model_ref_for(ctx: StepContext, spec: str) -> ModelRef:
    """A model spec (alias, directory, checkpoint URI, or a checkpoint id like M1 of the context's run)."""
    from srlm.steps.checkpoints import model_from_spec

    return model_from_spec(ctx, spec)


def local_model_path_of(ctx: StepContext, model: ModelRef) -> str:
    from srlm.steps.checkpoints import local_model_path

    return local_model_path(ctx, model)


def open_model_backend(ctx: StepContext, model: ModelRef):
    """A generation backend serving `model` with the context's backend settings (close it, or use `with`)."""
    from srlm.generation.factory import open_backend

    path, config = local_model_path_of(ctx, model), ctx.config
    return open_backend(path, config.backend, dtype=config.model.dtype, chat_template=config.model.chat_template)


def source_fingerprint(source: str) -> dict[str, Any]:
    """The identity of an input given by name: a committed store artifact's fingerprint, a local file's (or a
    local folder's files') content digest, else the name itself (an alias)."""
    from srlm.errors import StoreError
    from srlm.evaluation.sources import local_file_path
    from srlm.steps.reuse import fingerprint
    from srlm.store import artifacts

    try:
        if artifacts.is_committed(source):
            return fingerprint(source)
    except StoreError:  # not a store URI srlm can address: only its name identifies it
        return {"uri": source}
    path = local_file_path(source)
    if path is not None and path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        files = [path] if path is not None and path.is_file() else []
    if not files:
        return {"uri": source}
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name if file == path else file.relative_to(path)}\n".encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return {"uri": source, "sha256": digest.hexdigest()}


def slug(text: str) -> str:
    """A file-name-safe short name for a system (its last path component)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/").rsplit("/", 1)[-1])[:60] or "baseline"


def _system_fingerprint(ctx: StepContext, system: Any) -> Mapping[str, Any]:
    if system.kind == "outputs":
        return source_fingerprint(system.spec)
    return model_ref_for(ctx, system.spec).as_input()


def _judge_fingerprint(ctx: StepContext, judge: JudgeChoice, a_spec: str) -> Mapping[str, Any]:
    if judge.is_endpoint:
        from urllib.parse import urlsplit

        parts = urlsplit(judge.spec)
        # The connection's host and path, never its credentials.
        return {"endpoint": f"{parts.scheme}://{parts.hostname or ''}{parts.path}", "model": judge.model}
    return model_ref_for(ctx, a_spec if judge.spec == "self" else judge.spec).as_input()


def _reused(evaluation: Any, target: ResultTarget, suite: str, producer: Mapping[str, Any], echo: Echo | None) -> bool:
    """Whether a result made by `producer` is committed; then `evaluation` points at it and the user is told."""
    committed = committed_result(target, suite, producer, echo=echo)
    if committed is None:
        return False
    evaluation.recorded, evaluation.reused = committed, True
    (echo or print)(already_committed_message(committed))
    return True
