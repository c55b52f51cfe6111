"""Step `judge_health`: the gate between pairs and DPO (metrics and thresholds: srlm.judging.health).

It measures the iteration's committed judgments and pairs, commits what it found as a small `judge_health`
artifact (health.json: metrics, checks, failures, override) and passes, or stops the iteration with one
JudgeHealthError line naming each failed metric, its value and its threshold. Everything committed so far stays.

A person continues past a failed gate with `--accept-judge-warnings` (judge_health.accept_warnings) or, in the DAG,
by approving it (the step then runs again with option `accepted_by`): the override is written into the artifact,
so the report shows it and a rerun of the same iteration passes without asking again. accept_warnings is an
operational key: it decides whether the iteration goes on, not what is measured, so setting it reuses the
measurement. Changed thresholds or changed judgments/pairs measure again, and an earlier override no longer holds.

Option `on_failure` (orchestrated runs): "fail" (default) raises; "report" returns the failed result
(outputs["health"]["passed"] false) so the DAG can ask for approval instead of failing the task.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from srlm.errors import ConfigError, JudgeHealthError
from srlm.judging.health import HealthReport, assess, check_rows, health_metrics
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import step
from srlm.steps.reuse import fingerprint, reuse_committed
from srlm.steps.summary import StepSummary
from srlm.store import artifacts

STEP = "judge_health"
REPORT_FILE = "health.json"
ARTIFACT_KIND = "judge_health"
ON_FAILURE = ("fail", "report")
ACCEPT_FLAG = "--accept-judge-warnings (judge_health.accept_warnings)"


def check_judge_health(
    ctx: StepContext,
    iteration: int,
    *,
    judgments_uri: str | None = None,
    pairs_uri: str | None = None,
    out_uri: str | None = None,
    force: bool = False,
    accepted_by: str | None = None,
    on_failure: str = "fail",
) -> StepResult:
    """Measure, commit and judge the iteration's judge health; JudgeHealthError when it fails and nobody accepted."""
    if on_failure not in ON_FAILURE:
        raise ConfigError(f"judge_health: option on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    cfg = ctx.config.judge_health
    judgments_uri = judgments_uri or ctx.layout.judgments(iteration)
    pairs_uri = pairs_uri or ctx.layout.pairs(iteration)
    out_uri = out_uri or step(STEP).output_uri(ctx.layout, iteration)
    producer = ctx.producer(
        STEP, iteration, inputs={"judgments": fingerprint(judgments_uri), "pairs": fingerprint(pairs_uri)}
    )
    start = time.perf_counter()
    committed = reuse_committed(out_uri, producer, force=force, what=STEP, echo=ctx.echo, label="judge health")
    if committed is not None:
        report = read_report(out_uri)
    else:
        judgments = artifacts.read_table(
            judgments_uri, "judgments", columns=["prompt_id", "candidate_id", "score", "parse_ok"]
        )
        pairs = artifacts.read_table(pairs_uri, "pairs")
        metrics = health_metrics(judgments, pairs, required_parsed=ctx.config.judge.required_parsed_samples)
        report = assess(iteration, metrics, cfg)
    reused = committed is not None
    who = accepted_by or (ACCEPT_FLAG if cfg.accept_warnings else None)
    if report.failed and report.override is None and who is not None:
        report.override = {"by": who, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        reused = False
    if not reused:
        _write_report(out_uri, report, producer)

    summary = _summary(ctx, iteration, out_uri, report, time.perf_counter() - start, reused)
    health = {"passed": report.passed, "failed_checks": len(report.failures), "message": _message(report)}
    result = StepResult(out_uri, summary, reused, outputs={"health": health})
    if not report.passed and on_failure == "fail":
        raise JudgeHealthError(report.failure_line())
    return result


def read_report(uri: str) -> HealthReport:
    """The committed gate result of an iteration (the report and reruns read it)."""
    import json

    return HealthReport.from_dict(json.loads(artifacts.read_file(uri, REPORT_FILE)))


def committed_health(layout, iteration: int) -> HealthReport | None:
    """Iteration t's committed gate result (for the report and the monitors), None when the gate has not run."""
    uri = step(STEP).output_uri(layout, iteration)
    return read_report(uri) if artifacts.is_committed(uri) else None


def _write_report(uri: str, report: HealthReport, producer: dict) -> None:
    import json

    with tempfile.TemporaryDirectory(prefix="srlm-judge-health-") as tmp:
        Path(tmp, REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        artifacts.write_directory(uri, tmp, kind=ARTIFACT_KIND, producer=producer, force=True)


def _message(report: HealthReport) -> str:
    if not report.enabled:
        return "judge health: gate disabled (judge_health.enabled false); measured only"
    if not report.failures:
        return "judge health: every check passed"
    if report.override is not None:
        return f"judge health: failed checks accepted by {report.override['by']}: {'; '.join(report.failures)}"
    return report.failure_line()


def _summary(
    ctx: StepContext, iteration: int, uri: str, report: HealthReport, seconds: float, reused: bool
) -> StepSummary:
    summary = StepSummary(STEP, iteration, uri, wall_seconds=seconds, reused=reused)
    for check in check_rows(report):
        summary.add(check.metric, check.value, check.metric.replace("_", " "), check.status())
    m = report.metrics
    summary.metrics.update({k: m[k] for k in ("judgments", "pairs", "tied_prompts", "contested_prompts",
                                              "mean_char_gap", "mean_token_gap", "chosen_longer_rate")})
    summary.add_histogram("judgment_scores", m["score_histogram"], "judgment scores")
    summary.metrics["passed"] = report.passed
    summary.metrics["failures"] = list(report.failures)
    summary.metrics["override"] = report.override
    verdict = "passed" if not report.failed else ("accepted" if report.override else "FAILED")
    summary.lines.append(("verdict", verdict if report.enabled else "not enforced (judge_health.enabled false)"))
    if report.failed and report.override:
        summary.note(f"failed checks accepted by {report.override['by']} at {report.override['at']}")
    ctx.save_summary(summary)
    return summary


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `judge_health` step as the CLI, `srlm iterate` and orchestrated tasks call it."""
    return check_judge_health(
        ctx, call.iteration, judgments_uri=call.inputs.get("judgments"), pairs_uri=call.inputs.get("pairs"),
        out_uri=call.out, force=call.force, accepted_by=call.options.get("accepted_by") or None,
        on_failure=str(call.options.get("on_failure") or "fail"),
    )
