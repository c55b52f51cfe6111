"""Step `dpo`: iteration t trains M_t from M_{t-1} on the iteration's preference pairs (reference = M_{t-1}, its
log-probs precomputed and stored with the pairs); M_t is the checkpoint that dpo.checkpoint_selection picks
(srlm.training.selection), and the step summary shows every candidate's held-out scores.

With run.method: meta_rewarding it trains on the actor pairs plus the meta-judge's judgment pairs (Wu et al., 2024:
both preference sets train the next model together), committed as one pairs table, `<iteration>/dpo_pairs`, so the
trainer, the reference log-probs and checkpoint selection see one ordinary pairs table."""

from __future__ import annotations

import pyarrow as pa

from srlm.errors import DataError
from srlm.steps.checkpoints import checkpoint_id, registered_model
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import step
from srlm.steps.reuse import fingerprint, reuse_committed
from srlm.steps.training import current_checkpoint, train, training_summary
from srlm.store import artifacts
from srlm.store.schemas import schema
from srlm.store.uri import join_uri

STEP = "dpo"


def train_iteration_model(
    ctx: StepContext,
    iteration: int,
    *,
    pairs_uri: str | None = None,
    judgment_pairs_uri: str | None = None,
    force: bool = False,
) -> StepResult:
    """DPO M_{t-1} → M_t on the pairs table (meta_rewarding: plus the judgment pairs); refuses zero actor pairs
    (there is nothing to learn from ties)."""
    from srlm.training.registry import get_checkpoint

    parent = registered_model(ctx, checkpoint_id(iteration - 1))
    target = checkpoint_id(iteration)
    pairs_uri = pairs_uri or step("pairs").output_uri(ctx.layout, iteration)
    pairs = int(artifacts.read_manifest(pairs_uri).total_rows or 0)
    inputs = {"model": parent.as_input(), "pairs": fingerprint(pairs_uri)}
    rows = {"pairs": pairs}
    train_uri = pairs_uri
    if ctx.config.run.method == "meta_rewarding":
        judgment_pairs_uri = judgment_pairs_uri or step("meta_judge").output_uri(ctx.layout, iteration)
        inputs["judgment_pairs"] = fingerprint(judgment_pairs_uri)
        rows["judgment_pairs"] = int(artifacts.read_manifest(judgment_pairs_uri).total_rows or 0)
        rows["training_pairs"] = pairs + rows["judgment_pairs"]
    producer = ctx.producer(STEP, iteration, inputs=inputs)
    record = current_checkpoint(ctx, STEP, target, producer, force=force)
    if record is not None:
        return training_summary(ctx, STEP, iteration, record, 0.0, reused=True, rows=rows)
    if pairs == 0:
        raise DataError(
            f"iteration {iteration}: {pairs_uri} holds 0 preference pairs, so {target} cannot be trained. Every "
            "prompt was a tie or had fewer than two parsed judgments: see the judge and pairs summaries (parse "
            "rate, tie rate); more prompts (prompts.num_prompts), a better-trained M0 or judge.num_samples help. "
            f"After a change, rerun with `srlm iterate -t {iteration} --from-step <step>`."
        )
    if ctx.config.run.method == "meta_rewarding":  # the union is committed when M_t is trained, not on reuse
        train_uri = union_pairs(ctx, iteration, pairs_uri, judgment_pairs_uri, force=force)
    retrain = force or get_checkpoint(ctx.layout, target) is not None
    record, seconds = train(
        ctx,
        kind=STEP,
        model_spec=parent.spec,
        data_uris=[train_uri],
        checkpoint=target,
        iteration=iteration,
        parent_id=parent.label,
        producer=producer,
        force=retrain,
    )
    return training_summary(ctx, STEP, iteration, record, seconds, reused=False, rows=rows)


def judgment_pair_as_pair(row: dict) -> dict:
    """A judgment_pairs row in the pairs table's form: the judge prompt is the prompt, the judgments the responses,
    their Elo ratings the scores (what chose them); candidate ids name the judgments (<candidate_id>#j<sample>)."""
    return {
        "prompt_id": row["prompt_id"],
        "prompt": row["prompt"],
        "chosen": row["chosen"],
        "rejected": row["rejected"],
        "chosen_candidate_id": f"{row['candidate_id']}#j{row['chosen_sample_index']}",
        "rejected_candidate_id": f"{row['candidate_id']}#j{row['rejected_sample_index']}",
        "chosen_score": row["chosen_elo"],
        "rejected_score": row["rejected_elo"],
        "margin": row["chosen_elo"] - row["rejected_elo"],
        "chosen_chars": len(row["chosen"]),
        "rejected_chars": len(row["rejected"]),
    }


def union_pairs(ctx: StepContext, iteration: int, pairs_uri: str, judgment_pairs_uri: str, *, force: bool) -> str:
    """Commit the actor pairs followed by the judgment pairs as one pairs table (reused while both are unchanged)."""
    uri = join_uri(ctx.layout.iteration(iteration), "dpo_pairs")
    producer = ctx.producer(
        "dpo_pairs",
        iteration,
        params={},
        inputs={"pairs": fingerprint(pairs_uri), "judgment_pairs": fingerprint(judgment_pairs_uri)},
    )
    if reuse_committed(uri, producer, force=force, what=STEP, echo=ctx.echo, label="actor + judgment pairs") is None:
        actor = artifacts.read_table(pairs_uri, "pairs")
        judged = artifacts.read_table(judgment_pairs_uri, "judgment_pairs").to_pylist()
        extra = pa.Table.from_pylist([judgment_pair_as_pair(r) for r in judged], schema=schema("pairs"))
        artifacts.write_table(uri, pa.concat_tables([actor, extra]), "pairs", producer=producer, force=True)
    return uri


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `dpo` step as the CLI, `srlm iterate` and orchestrated tasks call it (always from the registered
    M_{t-1}: the self-rewarding loop trains the model that made the data)."""
    return train_iteration_model(
        ctx,
        call.iteration,
        pairs_uri=call.inputs.get("pairs"),
        judgment_pairs_uri=call.inputs.get("judgment_pairs"),
        force=call.force,
    )
