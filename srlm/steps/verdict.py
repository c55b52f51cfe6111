"""The verdict that ends `srlm run` (verdict.enabled): M_t against M_(t-1), the monitors, the report, one line.

After the run's last iteration t the newest model M_t is compared with its parent M_(t-1) head to head through
the same code path as `srlm eval head2head --a M_t --b M_(t-1) --run R --checkpoint M_t`
(srlm.evaluation.use_cases.evaluate_head2head): both models answer the same prompts (greedy by default), every
prompt is judged twice with the responses swapped (disagreement or an unparsed verdict is a tie), the annotations
go to <run>/eval/M_t/annotations/vs-M_(t-1) and the result to <run>/eval/M_t/head2head/v1. The judge is by
default M_t itself, comparing by the judge the loop trains (verdict.comparison rubric: each response scored with the
judge step's additive rubric, the higher mean wins; the model rarely writes the pairwise template's "Winner:"
line), so the line says "self-judged": the model grades its own comparison, which is evidence of change, not of
quality. The run's monitors are recorded
(srlm.evaluation.use_cases.evaluate_monitors, as the evaluate suites do) and the report is rewritten
(srlm.evaluation.report.write_report, as `srlm report` does).

The prompts are held out: unless verdict.prompts names a set, they are the shipped seed instructions that the run
trained on nowhere (not in its seed IFT table, not inside any seed EFT judge prompt, not among any iteration's
prompts), in file order, committed as a `prompts` table at <run>/eval/M_t/verdict/prompts so the result's
producer fingerprints them. A rerun with the same models, prompts and settings reuses the committed result and
opens no model.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field

from srlm.errors import ConfigError, DataError
from srlm.steps.checkpoints import checkpoint_id
from srlm.steps.context import StepContext
from srlm.store import artifacts
from srlm.store.uri import join_uri

SELF_JUDGE = "self"


@dataclass
class Verdict:
    """M_t (`model`) against M_(t-1) (`baseline`): shares of prompts won, tied and lost by M_t, in percent."""

    model: str
    baseline: str
    judge: str  # "self", or the judge spec verdict.judge names
    comparison: str  # "rubric" or "pairwise" (verdict.comparison)
    n: int
    win_pct: float
    tie_pct: float
    loss_pct: float
    order_parse_rate: float | None
    order_agreement: float | None
    result_uri: str
    annotations_uri: str | None
    report: str
    reused: bool = False
    flags: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def judged_by(self) -> str:
        return f"self-judged by {self.model}" if self.judge == SELF_JUDGE else f"judged by {self.judge}"

    @property
    def how(self) -> str:
        return "by its judge's rubric" if self.comparison == "rubric" else "pairwise, both orders"

    def line(self) -> str:
        return (
            f"== verdict: {self.model} vs {self.baseline} ({self.judged_by}, {self.how}, {self.n} prompts): "
            f"{self.model} wins {self.win_pct:.1f}%, loses {self.loss_pct:.1f}%, ties {self.tie_pct:.1f}% — "
            f"report: {self.report}"
        )

    def detail(self) -> str:
        """Why ties may be many: unscored responses, unparsed verdicts and order disagreements count as ties."""
        from srlm.formatting import format_duration, format_percent

        if self.comparison == "rubric":
            judged = (
                f"   both responses scored on {format_percent(self.order_parse_rate)} of prompts (an unscored "
                "response or equal means is a tie)"
            )
        else:
            judged = (
                f"   verdicts parsed in {format_percent(self.order_parse_rate)} of orders, both orders agree on "
                f"{format_percent(self.order_agreement)} of prompts (an unparsed or disagreeing pair is a tie)"
            )
        took = "reused in" if self.reused else "took"
        return f"{judged}; {took} {format_duration(self.wall_seconds)}; result {self.result_uri}"


def held_out_prompts(ctx: StepContext, t: int) -> list[str]:
    """The shipped seed instructions the run has not trained on up to iteration t, in file order."""
    from srlm.data.seed_data import seed_prompts

    layout = ctx.layout
    seen: set[str] = set()
    judge_prompts: list[str] = []
    for uri, kind in ((layout.seed_ift, "ift"), (layout.seed_eft, "eft")):
        if not artifacts.is_committed(uri):
            continue
        for messages in artifacts.read_table(uri, "sft_examples").column("prompt_messages").to_pylist():
            texts = [m["content"] for m in messages if m["role"] == "user"]
            if kind == "ift":
                seen.update(text.strip() for text in texts)
            else:
                judge_prompts.extend(texts)  # an EFT prompt holds its instruction inside the rubric
    for s in range(1, t + 1):
        if artifacts.is_committed(layout.prompts(s)):
            seen.update(p.strip() for p in artifacts.read_table(layout.prompts(s), "prompts").column("prompt").to_pylist())
    in_eft = "\n\x00\n".join(judge_prompts)
    return [p for p in dict.fromkeys(seed_prompts()) if p.strip() not in seen and p not in in_eft]


def verdict_prompts_uri(ctx: StepContext, t: int) -> str:
    return join_uri(ctx.layout.run_uri, "eval", checkpoint_id(t), "verdict", "prompts")


def commit_held_out_prompts(ctx: StepContext, t: int) -> str:
    """Commit the first verdict.num_prompts held-out prompts (kept as committed while they are the same)."""
    from srlm.steps.reuse import make_producer, reuse_committed

    count = ctx.config.verdict.num_prompts
    prompts = held_out_prompts(ctx, t)[:count]
    if not prompts:
        raise ConfigError(
            "verdict.prompts: the run trained on every shipped seed instruction, so none is held out for the "
            "verdict; name a prompts table or file (or set verdict.enabled: false)"
        )
    uri = verdict_prompts_uri(ctx, t)
    digest = hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode("utf-8")).hexdigest()
    producer = make_producer(
        "verdict_prompts", {}, {"source": "held-out shipped seed instructions", "prompts_sha256": digest},
        run=ctx.layout.run, checkpoint=checkpoint_id(t),
    )
    if reuse_committed(uri, producer, force=False, what="verdict prompts", echo=ctx.echo) is None:
        rows = [
            {"prompt_id": f"verdict-{i:04d}", "prompt": p, "source": "seed", "iteration": t, "generator": None}
            for i, p in enumerate(prompts)
        ]
        artifacts.write_table(uri, rows, "prompts", producer=producer, force=True)
    return uri


def run_verdict(ctx: StepContext, t: int) -> Verdict:
    """Head-to-head M_t vs M_(t-1) (recorded under M_t), monitors recorded, report written; returns the verdict."""
    from srlm.evaluation.judges import RUBRIC
    from srlm.evaluation.report import write_report
    from srlm.evaluation.results import ResultTarget
    from srlm.evaluation.suites import SUITE_VERSION
    from srlm.evaluation.use_cases import JudgeChoice, evaluate_head2head, evaluate_monitors

    if t < 1:
        raise ConfigError(f"verdict: needs an iteration (M_t against M_(t-1)), got t = {t}")
    cfg = ctx.config.verdict
    model, baseline = checkpoint_id(t), checkpoint_id(t - 1)
    if cfg.prompts is None:
        prompts, max_prompts = commit_held_out_prompts(ctx, t), None
    else:
        prompts, max_prompts = cfg.prompts, cfg.num_prompts
    ctx.echo(f"== verdict: {model} vs {baseline}, judge {cfg.judge} ({cfg.comparison}), prompts {prompts}")
    start = time.perf_counter()
    target = ResultTarget(ctx.layout, model, SUITE_VERSION)
    evaluation = evaluate_head2head(
        _with_backend(ctx, cfg.backend), model, baseline, JudgeChoice(spec=cfg.judge), prompts=prompts,
        template=RUBRIC if cfg.comparison == "rubric" else "pairwise", sampling=cfg.sampling,
        max_prompts=max_prompts, target=target,
    )
    if evaluation.result is not None:
        ctx.echo(evaluation.to_text())
    monitors = evaluate_monitors(ctx.layout, record=True, suite_version=SUITE_VERSION, echo=ctx.echo)
    report = write_report(ctx.layout)
    verdict = _from_committed(
        evaluation.recorded or target.uri("head2head"), model, baseline, cfg.judge, cfg.comparison, report.html
    )
    verdict.reused, verdict.flags = evaluation.reused, list(monitors.report.flags)
    verdict.wall_seconds = time.perf_counter() - start
    return verdict


def _with_backend(ctx: StepContext, backend: str | None) -> StepContext:
    """The context with backend.backend replaced by verdict.backend (when set)."""
    if backend is None or backend == ctx.config.backend.backend:
        return ctx
    config = copy.deepcopy(ctx.config)
    config.backend.backend = backend
    return dataclasses.replace(ctx, config=config)


def echo_verdict(ctx: StepContext, verdict: Verdict) -> None:
    """The monitors' flags (if any), then the verdict line: the last thing `srlm run` says."""
    ctx.echo(verdict.detail())
    ctx.echo("   monitors: " + ("no flags" if not verdict.flags else f"{len(verdict.flags)} flag(s)"))
    for flag in verdict.flags:
        ctx.echo(f"     ! {flag}")
    ctx.echo(verdict.line())


def _from_committed(uri: str, model: str, baseline: str, judge: str, comparison: str, report: str) -> Verdict:
    """The verdict from the committed head2head result, so a fresh and a reused result read the same way."""
    rows = artifacts.read_table(uri, "eval_results").to_pylist()
    if not rows:
        raise DataError(f"{uri}: committed head2head result has no rows")
    metrics = {row["metric"]: row["value"] for row in rows}
    counts = {row["metric"]: row["n"] for row in rows}
    details = json.loads(rows[0]["details_json"] or "{}")
    return Verdict(
        model=model,
        baseline=baseline,
        judge=judge,
        comparison=details.get("comparison", comparison),
        n=int(counts.get("a_win_pct") or 0),
        win_pct=metrics["a_win_pct"],
        tie_pct=metrics["tie_pct"],
        loss_pct=metrics["b_win_pct"],
        order_parse_rate=metrics.get("order_parse_rate"),
        order_agreement=metrics.get("order_agreement"),
        result_uri=uri,
        annotations_uri=details.get("annotations_uri"),
        report=report,
    )
