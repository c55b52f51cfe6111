"""What the sft and dpo steps share: building a training job spec, reuse of a registered checkpoint, the summary.

Training always runs in its own process (srlm.training.launch), so the caller never holds torch state and an
out-of-memory in training cannot take an iteration's driver down. Which data a registered checkpoint was trained
on is recorded (as manifest fingerprints) in the step's summary; a checkpoint whose data has been recomputed
since is trained again rather than silently reused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from srlm.steps.context import StepContext, StepResult
from srlm.steps.summary import StepSummary
from srlm.store import artifacts
from srlm.store.uri import join_uri

log = logging.getLogger(__name__)


def lineage_uri(ctx: StepContext, iteration: int, step: str) -> str:
    return join_uri(ctx.layout.summary(iteration, step), "inputs.json")


def registered_and_current(
    ctx: StepContext, checkpoint: str, iteration: int, step: str, inputs: dict[str, Any], *, force: bool
) -> Any | None:
    """The registered final checkpoint if it can be reused: not forced and trained on these very inputs."""
    from srlm.training.registry import get_checkpoint

    if force:
        return None
    record = get_checkpoint(ctx.layout, checkpoint)
    if record is None or not record.final or not artifacts.is_committed(record.uri):
        return None
    lineage = lineage_uri(ctx, iteration, step)
    if artifacts.exists(lineage):
        recorded = json.loads(artifacts.read_text(lineage))
        if recorded != inputs:
            changed = sorted(k for k in set(recorded) | set(inputs) if recorded.get(k) != inputs.get(k))
            ctx.echo(f"{step}: {checkpoint} was trained on other {', '.join(changed)}; training it again")
            return None
    return record


def train(
    ctx: StepContext,
    *,
    kind: str,
    model_spec: str,
    data_uris: list[str],
    checkpoint: str,
    iteration: int,
    parent_id: str | None,
    inputs: dict[str, Any],
    force: bool,
) -> tuple[Any, float]:
    """Run one training job in its own process; record its inputs; return (registry record, seconds)."""
    from srlm.training.launch import TrainingJobSpec, run_training_job

    section = getattr(ctx.config, kind)
    spec = TrainingJobSpec(
        kind=kind,
        store_root=ctx.layout.root,
        run=ctx.layout.run,
        model=model_spec,
        data_uris=data_uris,
        checkpoint_id=checkpoint,
        iteration=iteration,
        parent_id=parent_id,
        config=dataclasses.asdict(section),
        ref_model=None,  # DPO's reference is the input model M_{t-1}, as in the paper
        store=dataclasses.asdict(ctx.config.store),
        model_cache_dir=ctx.config.model.cache_dir,
    )
    ctx.echo(f"{kind}: training {checkpoint} from {parent_id or model_spec} in a separate process")
    start = time.perf_counter()
    record = run_training_job(spec, section.num_processes, force=force)
    seconds = time.perf_counter() - start
    artifacts.write_text(lineage_uri(ctx, iteration, kind), json.dumps(inputs, sort_keys=True))
    return record, seconds


def training_summary(
    ctx: StepContext, step: str, iteration: int, record: Any, seconds: float, *, reused: bool, rows: dict[str, int]
) -> StepResult:
    summary = StepSummary(step, iteration, record.uri, wall_seconds=seconds, reused=reused)
    summary.add("checkpoint", record.checkpoint_id, text=f"{record.checkpoint_id} (from {record.parent_id or 'base'})")
    for name, count in rows.items():
        summary.add(name, count)
    if record.step is not None:
        summary.add("optimizer_steps", int(record.step), "optimizer steps")
    section = getattr(ctx.config, step)
    summary.add("learning_rate", section.learning_rate, "learning rate",
                f"{section.learning_rate:g} → {section.final_learning_rate:g} ({section.lr_schedule})")
    summary.add("epochs", section.num_train_epochs)
    ctx.save_summary(summary)
    return StepResult(record.uri, summary, reused)
