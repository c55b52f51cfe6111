"""Step `generate`: N sampled candidate responses per prompt from the current model (paper: N=4, T 0.7, top-p 0.9)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from srlm.errors import DataError
from srlm.formatting import format_rate
from srlm.generation.base import Sampling
from srlm.steps.backends import BackendPool, call_backends
from srlm.steps.checkpoints import ModelRef, call_model
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import step
from srlm.steps.reuse import ShardRun, fingerprint, reuse_committed, run_sharded
from srlm.steps.summary import StepSummary, mean
from srlm.store import artifacts
from srlm.store.schemas import schema

STEP = "generate"


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `generate` step as the CLI, `srlm iterate` and orchestrated tasks call it."""
    with call_backends(ctx, call) as pool:
        return generate_candidates(
            ctx, call.iteration, model=call_model(ctx, call), backends=pool, prompts_uri=call.inputs.get("prompts"),
            out_uri=call.out, force=call.force,
        )


def candidate_id(prompt_id: str, index: int) -> str:
    return f"{prompt_id}-c{index}"


def generate_candidates(
    ctx: StepContext,
    iteration: int,
    *,
    model: ModelRef,
    backends: BackendPool,
    prompts_uri: str | None = None,
    out_uri: str | None = None,
    force: bool = False,
) -> StepResult:
    """Sample `generate.num_candidates` responses per prompt; writes the `candidates` table (sharded, resumable)."""
    cfg = ctx.config.generate
    prompts_uri = prompts_uri or ctx.layout.prompts(iteration)
    out_uri = out_uri or step(STEP).output_uri(ctx.layout, iteration)
    producer = ctx.producer(STEP, iteration, inputs={"prompts": fingerprint(prompts_uri), "model": model.as_input()})
    start = time.perf_counter()
    if reuse_committed(out_uri, producer, force=force, what=STEP, echo=ctx.echo, label="candidates") is not None:
        return _finish(ctx, iteration, out_uri, ShardRun(), time.perf_counter() - start, reused=True)

    prompts = artifacts.read_table(prompts_uri, "prompts", columns=["prompt_id", "prompt"]).to_pylist()
    if len({p["prompt_id"] for p in prompts}) != len(prompts):
        raise DataError(f"{prompts_uri}: prompt_id values are not unique")
    sampling = Sampling(
        n=cfg.num_candidates, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens
    )

    def make_shard(chunk: Sequence[dict], run: ShardRun) -> pa.Table:
        backend = backends.get(model)
        requests = [[{"role": "user", "content": p["prompt"]}] for p in chunk]
        completions = run.generate(backend, requests, sampling, progress=ctx.progress)
        rows = []
        for prompt, completion in zip(chunk, completions, strict=True):
            if len(completion.texts) != cfg.num_candidates:
                raise DataError(
                    f"{backend.name} backend returned {len(completion.texts)} samples for prompt "
                    f"{prompt['prompt_id']}, expected {cfg.num_candidates}"
                )
            for index, (text, tokens, reason) in enumerate(
                zip(completion.texts, completion.num_tokens, completion.finish_reasons, strict=True)
            ):
                rows.append(
                    {
                        "prompt_id": prompt["prompt_id"],
                        "candidate_id": candidate_id(prompt["prompt_id"], index),
                        "candidate_index": index,
                        "prompt": prompt["prompt"],
                        "response": text.strip(),
                        "num_tokens": tokens,
                        "finish_reason": reason,
                        "model": model.label,
                        "backend": backend.name,
                    }
                )
        return pa.Table.from_pylist(rows, schema=schema("candidates"))

    run = run_sharded(out_uri, prompts, cfg.shard_size, schema_name="candidates", key_column="prompt_id",
                      make_shard=make_shard, producer=producer, what=STEP, force=force)  # fmt: skip
    return _finish(ctx, iteration, out_uri, run, time.perf_counter() - start, reused=False)




def _finish(ctx: StepContext, iteration: int, uri: str, run: ShardRun, seconds: float, *, reused: bool) -> StepResult:
    table = artifacts.read_table(
        uri, "candidates", columns=["prompt_id", "response", "num_tokens", "finish_reason"]
    )
    summary = StepSummary(STEP, iteration, uri, wall_seconds=seconds, reused=reused)
    prompts = pc.count_distinct(table.column("prompt_id")).as_py() if table.num_rows else 0
    summary.add("rows", table.num_rows, text=f"{table.num_rows:,} candidates for {prompts:,} prompts")
    summary.add("prompts", prompts)
    summary.add("mean_chars", mean(len(r) for r in table.column("response").to_pylist()), "mean length (chars)")
    summary.add("mean_tokens", mean(table.column("num_tokens").to_pylist()), "mean length (tokens)")
    truncated = sum(1 for r in table.column("finish_reason").to_pylist() if r == "length")
    summary.add("truncated_fraction", truncated / table.num_rows if table.num_rows else 0.0, "hit max tokens",
                format_rate(truncated, table.num_rows))
    summary.metrics["truncated"] = truncated
    if truncated and truncated >= table.num_rows / 4 and ctx.config.generate.drop_truncated:
        summary.note(f"{format_rate(truncated, table.num_rows)} of candidates hit generate.max_new_tokens; "
                     "generate.drop_truncated keeps them from being chosen, so pairs may be few")
    empty = sum(1 for r in table.column("response").to_pylist() if not r)
    summary.add("empty", empty, "empty responses")
    if run.shards:
        summary.add("shards", run.shards, text=f"{run.shards} ({run.reused} reused)")
        summary.add("tokens_per_second", run.tokens_per_second, "tokens/s (new)")
    ctx.save_summary(summary)
    return StepResult(uri, summary, reused)
