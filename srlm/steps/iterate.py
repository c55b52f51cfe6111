"""`iterate` (one self-rewarding iteration) and `run` (base model → M0 → M1 … M_K), both resumable.

Iteration t runs the registry's iteration steps in order (srlm.steps.registry.ITERATION_STEPS: prompts, generate,
judge, pairs, dpo). One generation backend on M_{t-1} serves every generation step (one engine start instead of
three), and is closed before the first step that is not one, so training finds its memory free. Every step
reuses its committed output, so rerunning after a crash continues at the first step with missing work, and a
completed iteration opens no backend at all.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from srlm.errors import ConfigError
from srlm.formatting import format_duration
from srlm.steps.backends import BackendOpener, new_backend_pool
from srlm.steps.checkpoints import checkpoint_id, registered_model
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import GENERATION, ITERATION_STEPS, step
from srlm.steps.sft import train_seed_model
from srlm.steps.verdict import Verdict, echo_verdict, run_verdict

log = logging.getLogger(__name__)

@dataclass
class IterationResult:
    iteration: int
    checkpoint_id: str
    checkpoint_uri: str
    steps: dict[str, StepResult] = field(default_factory=dict)
    backend_starts: int = 0
    wall_seconds: float = 0.0


@dataclass
class RunResult:
    seed: StepResult
    iterations: list[IterationResult]
    wall_seconds: float = 0.0
    verdict: Verdict | None = None  # M_K against M_(K-1), when verdict.enabled

    @property
    def final_checkpoint_uri(self) -> str:
        return self.iterations[-1].checkpoint_uri if self.iterations else self.seed.uri


def next_iteration(ctx: StepContext) -> int:
    """The iteration after the newest registered final model (1 once M0 exists)."""
    from srlm.training.registry import latest_final

    latest = latest_final(ctx.layout)
    return 1 if latest is None else latest.iteration + 1


def iterate(
    ctx: StepContext,
    iteration: int | None = None,
    *,
    force_from: str | None = None,
    opener: BackendOpener | None = None,
) -> IterationResult:
    """Run iteration t (default: the next one): M_{t-1} → prompts → candidates → judgments → pairs → DPO → M_t.

    force_from recomputes that step; the later ones follow because their inputs changed. `opener` replaces how the
    backend is opened (default: srlm.generation.open_backend with the config's backend section).
    """
    if force_from is not None and force_from not in ITERATION_STEPS:
        raise ConfigError(f"--from-step: unknown step {force_from!r}; steps: {', '.join(ITERATION_STEPS)}")
    t = next_iteration(ctx) if iteration is None else iteration
    if t < 1:
        raise ConfigError(f"iteration: numbered from 1 (iteration t trains M_t from M_(t-1)), got {t}")
    start = time.perf_counter()
    parent = registered_model(ctx, checkpoint_id(t - 1))
    ctx.echo(f"== iteration {t}: {parent.label} → {checkpoint_id(t)} (run {ctx.layout.run!r}, {ctx.layout.run_uri})")

    result = IterationResult(t, checkpoint_id(t), "")
    pool = new_backend_pool(ctx, opener)
    try:
        for name in ITERATION_STEPS:
            definition = step(name)
            if definition.resources != GENERATION:
                pool.close()  # free the engine's memory before training (or CPU work) starts
            call = StepCall(iteration=t, force=force_from == name, backends=pool)
            result.steps[name] = definition.load_runner()(ctx, call)
    finally:
        pool.close()
    result.backend_starts = pool.opened
    trained = result.steps[ITERATION_STEPS[-1]]  # an iteration ends with the step that trains M_t
    result.checkpoint_uri = trained.uri
    result.wall_seconds = time.perf_counter() - start
    ctx.echo(
        f"== iteration {t} done in {format_duration(result.wall_seconds)}: {checkpoint_id(t)} registered at "
        f"{trained.uri}"
    )
    return result


def run(
    ctx: StepContext, *, iterations: int | None = None, force: bool = False, opener: BackendOpener | None = None
) -> RunResult:
    """The whole job: resolve/prepare model.base, seed SFT → M0, then `run.iterations` iterations, then (with
    verdict.enabled) M_K against M_(K-1) head to head, the monitors and the report (srlm.steps.verdict).

    Rerunning continues where it stopped; `force` retrains M0 and recomputes every iteration (the verdict follows:
    its committed result is stale once the models are).
    """
    count = ctx.config.run.iterations if iterations is None else iterations
    if count < 0:
        raise ConfigError(f"run.iterations: must not be negative, got {count}")
    start = time.perf_counter()
    base = ctx.config.model.base
    ctx.echo(f"== run {ctx.layout.run!r}: base model {base}, {count} iteration(s), store {ctx.layout.root}")
    # Resolve now (an alias is prepared once, a checkpoint fetched): a bad model.base fails before anything runs.
    from srlm.models import resolve_model

    resolve_model(base, ctx.config.model.cache_dir)
    seed = train_seed_model(ctx, force=force)
    done = []
    for t in range(1, count + 1):
        done.append(iterate(ctx, t, force_from="prompts" if force else None, opener=opener))
    verdict = None
    if ctx.config.verdict.enabled:
        if count:
            verdict = run_verdict(ctx, count)
        else:
            ctx.echo("== verdict: skipped: no iteration ran (run.iterations = 0), so there is no M_t to compare with M0")
    result = RunResult(seed, done, time.perf_counter() - start, verdict)
    ctx.echo(f"== run {ctx.layout.run!r} done in {format_duration(result.wall_seconds)}: {result.final_checkpoint_uri}")
    if verdict is not None:
        echo_verdict(ctx, verdict)  # the last lines the run prints: the verdict and where the report is
    return result
