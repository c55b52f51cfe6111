"""Step `dpo`: iteration t trains M_t from M_{t-1} on the iteration's preference pairs (reference = M_{t-1}, its
log-probs precomputed and stored with the pairs); M_t is the checkpoint that dpo.checkpoint_selection picks
(srlm.training.selection), and the step summary shows every candidate's held-out scores."""

from __future__ import annotations

from srlm.errors import DataError
from srlm.steps.checkpoints import checkpoint_id, registered_model
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import step
from srlm.steps.reuse import fingerprint
from srlm.steps.training import current_checkpoint, train, training_summary
from srlm.store import artifacts

STEP = "dpo"


def train_iteration_model(
    ctx: StepContext, iteration: int, *, pairs_uri: str | None = None, force: bool = False
) -> StepResult:
    """DPO M_{t-1} → M_t on the pairs table; refuses an empty one (there is nothing to learn from ties)."""
    from srlm.training.registry import get_checkpoint

    parent = registered_model(ctx, checkpoint_id(iteration - 1))
    target = checkpoint_id(iteration)
    pairs_uri = pairs_uri or step("pairs").output_uri(ctx.layout, iteration)
    pairs = int(artifacts.read_manifest(pairs_uri).total_rows or 0)
    producer = ctx.producer(STEP, iteration, inputs={"model": parent.as_input(), "pairs": fingerprint(pairs_uri)})
    record = current_checkpoint(ctx, STEP, target, producer, force=force)
    if record is not None:
        return training_summary(ctx, STEP, iteration, record, 0.0, reused=True, rows={"pairs": pairs})
    if pairs == 0:
        raise DataError(
            f"iteration {iteration}: {pairs_uri} holds 0 preference pairs, so {target} cannot be trained. Every "
            "prompt was a tie or had fewer than two parsed judgments: see the judge and pairs summaries (parse "
            "rate, tie rate); more prompts (prompts.num_prompts), a better-trained M0 or judge.num_samples help. "
            f"After a change, rerun with `srlm iterate -t {iteration} --from-step <step>`."
        )
    retrain = force or get_checkpoint(ctx.layout, target) is not None
    record, seconds = train(
        ctx, kind=STEP, model_spec=parent.spec, data_uris=[pairs_uri], checkpoint=target, iteration=iteration,
        parent_id=parent.label, producer=producer, force=retrain,
    )
    return training_summary(ctx, STEP, iteration, record, seconds, reused=False, rows={"pairs": pairs})


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `dpo` step as the CLI, `srlm iterate` and orchestrated tasks call it (always from the registered
    M_{t-1}: the self-rewarding loop trains the model that made the data)."""
    return train_iteration_model(ctx, call.iteration, pairs_uri=call.inputs.get("pairs"), force=call.force)
