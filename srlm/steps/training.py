"""What the sft and dpo steps share: building a training job spec, reuse of a registered checkpoint, the summary.

Training always runs in its own process (srlm.training.launch), so the caller never holds torch state and an
out-of-memory in training cannot take an iteration's driver down. The step's producer (inputs' fingerprints,
training hyperparameters) travels with the job into the checkpoint's manifest, and the registry record keeps the
section it was trained with; a registered checkpoint is reused only while that producer matches (srlm.steps.reuse),
so a changed dpo.beta or new pairs train it again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from srlm.formatting import format_value
from srlm.steps.context import StepContext, StepResult
from srlm.steps.reuse import reuse_committed
from srlm.steps.summary import StepSummary
from srlm.store import artifacts

log = logging.getLogger(__name__)


def current_checkpoint(
    ctx: StepContext, step: str, checkpoint: str, producer: dict[str, Any], *, force: bool
) -> Any | None:
    """The registered final checkpoint if it can be reused: not forced and produced by this very producer. One
    registered but missing from the store is an error unless forced (srlm.training.registry.committed_checkpoint)."""
    from srlm.training.registry import committed_checkpoint, get_checkpoint

    record = get_checkpoint(ctx.layout, checkpoint) if force else committed_checkpoint(ctx.layout, checkpoint)
    if record is None or not record.final or not artifacts.is_committed(record.uri):
        return None
    if reuse_committed(record.uri, producer, force=force, what=step, echo=ctx.echo, label=checkpoint) is None:
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
    producer: dict[str, Any],
    force: bool,
) -> tuple[Any, float]:
    """Run one training job in its own process; return (registry record, seconds)."""
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
        chat_template=ctx.config.model.chat_template,
        ray_address=ctx.config.backend.ray_address,
        producer=producer,
    )
    ctx.echo(f"{kind}: training {checkpoint} from {parent_id or model_spec} in a separate process")
    start = time.perf_counter()
    record = run_training_job(spec, section.num_processes, force=force)
    return record, time.perf_counter() - start


def training_summary(
    ctx: StepContext, step: str, iteration: int, record: Any, seconds: float, *, reused: bool, rows: dict[str, int]
) -> StepResult:
    """The summary of a trained or reused checkpoint, with the hyperparameters it was trained with (the registry
    record's section, not the current config's)."""
    summary = StepSummary(step, iteration, record.uri, wall_seconds=seconds, reused=reused)
    summary.add("checkpoint", record.checkpoint_id, text=f"{record.checkpoint_id} (from {record.parent_id or 'base'})")
    for name, count in rows.items():
        summary.add(name, count)
    if record.step is not None:
        summary.add("optimizer_steps", int(record.step), "optimizer steps")
    trained = trained_with(record)
    peak, final, schedule = (trained.get(k) for k in ("learning_rate", "final_learning_rate", "lr_schedule"))
    summary.add("learning_rate", peak, "learning rate", f"{_lr(peak)} → {_lr(final)} ({schedule or 'n/a'})")
    epochs = trained.get("num_train_epochs")
    summary.add("epochs", epochs, text=None if epochs is not None else "n/a")
    if step == "dpo":
        summary.add("beta", trained.get("beta"), "β", None if trained.get("beta") is not None else "n/a")
        add_selection(summary, record)
    if step == "sft":
        add_sft_fit(summary, record)
    ctx.save_summary(summary)
    return StepResult(record.uri, summary, reused, outputs={"checkpoint_id": record.checkpoint_id})


def add_sft_fit(summary: StepSummary, record: Any) -> None:
    """How many seed examples SFT dropped as longer than sft.max_length (srlm.training.data.SFTFit, kept in the
    registry record's details); nothing for a checkpoint registered without it."""
    try:
        fit = (getattr(record, "details", None) or {}).get("sft_fit")
    except ValueError:  # unreadable details_json
        fit = None
    if not fit:
        return
    dropped = fit.get("dropped_too_long") or {}
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(dropped.items()) if n) or "none"
    total = sum(dropped.values())
    summary.add(
        "examples_dropped_too_long", total, f"dropped (over max_length {fit.get('max_length')})", f"{total} ({kinds})"
    )


def add_selection(summary: StepSummary, record: Any) -> None:
    """Which DPO checkpoint became M_t and every candidate's held-out scores (srlm.training.selection's record,
    kept in the registry record's details); nothing for a checkpoint registered without one."""
    try:
        selection = (getattr(record, "details", None) or {}).get("selection")
    except ValueError:  # unreadable details_json
        selection = None
    if not selection:
        return
    chosen, candidates = selection.get("selected_step"), selection.get("candidates") or []
    if not candidates:
        text = f"{selection.get('rule')}: the last step (step {chosen}); {selection.get('reason')}"
        summary.add("checkpoint_selection", selection, "checkpoint selection", text)
        return
    text = (
        f"best {selection.get('metric', '').replace('_', ' ')} on {selection.get('validation_pairs')} held-out "
        f"pairs: step {chosen} of {len(candidates)} candidates"
    )
    summary.add("checkpoint_selection", selection, "checkpoint selection", text)
    for candidate in candidates:
        name = candidate.get("checkpoint_id") or "last step"
        mark = "  ← M_t" if candidate.get("step") == chosen else ""
        scores = f"reward accuracy {candidate['reward_accuracy']:.3f}, loss {candidate['loss']:.4f}"
        summary.lines.append((f"  step {candidate['step']}", f"{scores} ({name}){mark}"))


def trained_with(record: Any) -> dict[str, Any]:
    """The training section a registered checkpoint was trained with ({} for one registered by hand)."""
    try:
        return dict(record.config or {})
    except ValueError:  # unreadable config_json: report nothing rather than the current config
        return {}


def _lr(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, (int, float)) else format_value(value)
