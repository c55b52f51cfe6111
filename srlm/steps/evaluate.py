"""Step `evaluate`: one registered checkpoint on the orchestrated evaluation suites (srlm.evaluation.suites).

Each suite's result is its own committed artifact, reused while its producer matches (srlm.steps.reuse); a suite
with nothing to evaluate (no human-ranked groups, no generated data yet) is skipped with the reason.
"""

from __future__ import annotations

from srlm.errors import ConfigError
from srlm.steps.context import StepCall, StepContext, StepResult

STEP = "evaluate"


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """options: checkpoint (required, e.g. "M1") and suites (default: the suites module's DEFAULT_SUITES)."""
    from srlm.evaluation.suites import DEFAULT_SUITES, SUITES, evaluate_checkpoint

    checkpoint = call.options.get("checkpoint")
    if not checkpoint:
        raise ConfigError("evaluate: options.checkpoint is required (a checkpoint id such as M1)")
    suites = tuple(call.options.get("suites") or DEFAULT_SUITES)
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise ConfigError(f"evaluate: unknown suite(s) {', '.join(unknown)}; orchestrated suites: {', '.join(SUITES)}")
    outcome = evaluate_checkpoint(ctx, str(checkpoint), suites, force=call.force)
    uri = ctx.layout.eval_result(str(checkpoint), "", "")
    return StepResult(uri, reused=None, outputs={"results": dict(outcome.results), "skipped": dict(outcome.skipped)})
