"""Step `sft`: the seed fine-tuning of the base model on IFT + EFT examples, registered as M0."""

from __future__ import annotations

from srlm.steps.checkpoints import checkpoint_id
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.reuse import fingerprint
from srlm.steps.seeds import seed_tables
from srlm.steps.training import current_checkpoint, train, training_summary
from srlm.store import artifacts

STEP = "sft"


def train_seed_model(ctx: StepContext, *, force: bool = False) -> StepResult:
    """Fine-tune model.base on the seed IFT and EFT tables (configured or shipped) into M0; reuse a registered M0
    trained from the same base, data and sft settings unless forced."""
    from srlm.training.registry import get_checkpoint

    m0 = checkpoint_id(0)
    ift, eft = seed_tables(ctx)
    inputs = {"base": ctx.config.model.base, "ift": fingerprint(ift), "eft": fingerprint(eft)}
    producer = ctx.producer(STEP, 0, inputs=inputs)
    rows = {"ift_examples": _rows(ift), "eft_examples": _rows(eft)}
    record = current_checkpoint(ctx, STEP, m0, producer, force=force)
    if record is not None:
        return training_summary(ctx, STEP, 0, record, 0.0, reused=True, rows=rows)
    retrain = force or get_checkpoint(ctx.layout, m0) is not None
    record, seconds = train(
        ctx, kind=STEP, model_spec=ctx.config.model.base, data_uris=[ift, eft], checkpoint=m0, iteration=0,
        parent_id=None, producer=producer, force=retrain,
    )
    return training_summary(ctx, STEP, 0, record, seconds, reused=False, rows=rows)


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `sft` step as the CLI and orchestrated tasks call it (the base model is config model.base)."""
    return train_seed_model(ctx, force=call.force)


def _rows(uri: str) -> int:
    return int(artifacts.read_manifest(uri).total_rows or 0)
