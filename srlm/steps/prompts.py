"""Step `prompts`: new prompts by 8-shot self-instruct, filtered and de-duplicated (srlm.steps.self_instruct).

The generating model is prompts.model when given (the paper's fixed model, the same in every iteration), else the
model the iteration starts from. Each request shows prompts.num_shots demonstrations: seed prompts plus
prompts.num_generated_shots prompts generated earlier in the run (the earlier iterations' prompts and the prompts
kept by earlier rounds), as Self-Instruct mixes them. New prompts are screened against the seeds, everything kept
before and every earlier iteration's committed prompts table, which are therefore inputs of the step.

Generation runs in rounds until `prompts.num_prompts` are kept or `prompts.max_rounds` have run. Each round is
committed as a shard (its accepted prompts, plus its rejection counts in the producer), so a rerun resumes after
the last committed round and screens new prompts against everything kept before.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa

from srlm.errors import DataError
from srlm.formatting import format_rate
from srlm.generation.base import Sampling, tokens_per_second
from srlm.steps.backends import BackendPool, call_backends
from srlm.steps.checkpoints import ModelRef, call_model
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import step
from srlm.steps.reuse import (
    committed_state,
    drop_unlisted_shards,
    fingerprint,
    produced_with,
    reuse_committed,
    stale_reasons,
)
from srlm.steps.self_instruct import (
    CLOSE_TAG,
    REASONS,
    PromptFilter,
    build_request,
    generated_shot_count,
    normalise,
    sample_shots,
)
from srlm.steps.summary import StepSummary, mean
from srlm.store import artifacts
from srlm.store.schemas import schema

log = logging.getLogger(__name__)

STEP = "prompts"
# Requests per round relative to the prompts still missing: most completions of a small model are rejected, and
# one large batch keeps an engine busier than many small ones.
OVERSAMPLE = 2
MIN_REQUESTS_PER_ROUND = 8
# How many prompts are wanted and how many rounds may run decide how many rounds there are, not what one round
# produces: a resumed round is compared without them.
ROUND_IGNORES = ("prompts.num_prompts", "prompts.max_rounds")


def prompt_id(iteration: int, text: str) -> str:
    """Stable across reruns: derived from the normalised text, which exact de-duplication makes unique."""
    return f"p{iteration:03d}-{hashlib.sha256(normalise(text).encode('utf-8')).hexdigest()[:12]}"


def earlier_prompts(ctx: StepContext, iteration: int) -> tuple[list[str], list[dict]]:
    """The prompts of iterations 1 … t-1 of the run (their committed tables in the run's layout), and each table's
    identity as a step input: new prompts are screened against them, so a recomputed table recomputes these.

    An iteration without a committed prompts table (its candidates were generated from prompts given elsewhere)
    contributes nothing and is recorded as such, so the table appearing later is noticed too."""
    texts: list[str] = []
    identities: list[dict] = []
    for earlier in range(1, iteration):
        uri = ctx.layout.prompts(earlier)
        if not artifacts.is_committed(uri):
            identities.append({"iteration": earlier, "committed": False})
            continue
        rows = artifacts.read_table(uri, "prompts", columns=["prompt"]).column("prompt").to_pylist()
        texts.extend(rows)
        identities.append({"iteration": earlier, "rows": len(rows), **fingerprint(uri)})
    return texts, identities


def generate_prompts(
    ctx: StepContext,
    iteration: int,
    *,
    model: ModelRef,
    backends: BackendPool,
    seeds: Sequence[str],
    out_uri: str | None = None,
    force: bool = False,
) -> StepResult:
    """Self-instruct `prompts.num_prompts` new prompts with `model`; writes the `prompts` table."""
    cfg = ctx.config.prompts
    seeds = [s.strip() for s in seeds if s and s.strip()]
    if not seeds:
        raise DataError("prompts: no seed prompts to show the model (seed IFT data is empty)")
    out_uri = out_uri or step(STEP).output_uri(ctx.layout, iteration)
    seeds_digest = hashlib.sha256("\n\x00".join(seeds).encode("utf-8")).hexdigest()
    earlier, earlier_tables = earlier_prompts(ctx, iteration)
    inputs = {
        "seeds": {"count": len(seeds), "sha256": seeds_digest},
        "model": model.as_input(),
        "earlier_prompts": earlier_tables,
    }
    producer = ctx.producer(STEP, iteration, inputs=inputs)
    start = time.perf_counter()
    replaces = committed_state(out_uri)
    manifest = reuse_committed(out_uri, producer, force=force, what=STEP, echo=ctx.echo, label="prompts")
    if manifest is not None:
        rounds = manifest.producer.get("rounds")
        rounds = _stored_rounds(out_uri) if rounds is None else rounds
        wanted = produced_with(manifest).get("prompts.num_prompts", cfg.num_prompts)
        return _finish(ctx, iteration, out_uri, rounds, time.perf_counter() - start, reused=True, wanted=wanted,
                       earlier_tables=earlier_tables)

    screen = PromptFilter.from_config(cfg, seeds, earlier)
    rounds: list[dict] = []
    round_uris: list[str] = []
    kept = 0
    sampling = Sampling(
        n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, stop=(CLOSE_TAG,)
    )
    for round_index in range(cfg.max_rounds):
        if kept >= cfg.num_prompts:
            break
        target = artifacts.shard_uri(out_uri, round_index)
        round_replaces = committed_state(target)
        resumed = None if force else _resume_round(target, producer, screen)
        if resumed is not None:
            table, stats = resumed
        else:
            table, stats = _run_round(
                ctx, iteration, round_index, model, backends, seeds, screen, cfg.num_prompts - kept, sampling
            )
            round_producer = {**producer, "round": stats}
            artifacts.write_table(
                target, table, "prompts", producer=round_producer, force=True, replaces=round_replaces
            )
        rounds.append(stats)
        round_uris.append(target)
        kept += table.num_rows
        ctx.echo(
            f"prompts round {round_index + 1}: kept {table.num_rows} of {stats['requests']} "
            f"({kept}/{cfg.num_prompts})" + (" [resumed]" if resumed is not None else "")
        )
    if kept == 0:
        reasons = _rejections(rounds)
        top = ", ".join(f"{r} {n}" for r, n in reasons.most_common(4)) or "no completions"
        raise DataError(
            f"prompts: no usable prompt after {len(rounds)} round(s) of self-instruct with {model.label} "
            f"(rejected: {top}); raise prompts.max_new_tokens or prompts.max_rounds, or check the model"
        )
    artifacts.commit_shards(
        out_uri, round_uris, "prompts", producer={**producer, "rounds": rounds}, force=True, replaces=replaces
    )
    drop_unlisted_shards(out_uri, len(round_uris))
    return _finish(ctx, iteration, out_uri, rounds, time.perf_counter() - start, reused=False, wanted=cfg.num_prompts,
                   earlier_tables=earlier_tables)


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `prompts` step as the CLI, `srlm iterate` and orchestrated tasks call it (prompts.model, else M_{t-1};
    seeds from inputs["seeds"], else the run's seed IFT prompts)."""
    from srlm.steps.seeds import seed_prompt_texts

    model = call_model(ctx, call, ctx.config.prompts.model)
    with call_backends(ctx, call) as pool:
        return generate_prompts(
            ctx, call.iteration, model=model, backends=pool, seeds=seed_prompt_texts(ctx, call.inputs.get("seeds")),
            out_uri=call.out, force=call.force,
        )


def _run_round(
    ctx: StepContext,
    iteration: int,
    round_index: int,
    model: ModelRef,
    backends: BackendPool,
    seeds: Sequence[str],
    screen: PromptFilter,
    missing: int,
    sampling: Sampling,
) -> tuple[pa.Table, dict]:
    cfg = ctx.config.prompts
    # Seeded per (run seed, iteration, round): a resumed run shows the model the same shots it would have.
    rng = random.Random(f"{ctx.config.backend.seed}-{iteration}-{round_index}")
    count = max(MIN_REQUESTS_PER_ROUND, OVERSAMPLE * missing)
    # Generated demonstrations come from what exists when the round starts: its requests are one batch.
    generated = list(screen.generated)
    shots = [sample_shots(seeds, cfg.num_shots, rng, generated, cfg.num_generated_shots) for _ in range(count)]
    backend = backends.get(model)
    began = time.perf_counter()
    completions = backend.generate([build_request(s) for s in shots], sampling, progress=ctx.progress)
    seconds = time.perf_counter() - began
    rejected_before = Counter(screen.rejected)
    rows = []
    surplus = 0
    for shown, completion in zip(shots, completions, strict=True):
        if len(rows) >= missing:
            surplus += 1  # enough kept: the rest are neither screened nor remembered
            continue
        task, _ = screen.screen(completion.texts[0], completion.finish_reasons[0], shown)
        if task is not None:
            rows.append(
                {
                    "prompt_id": prompt_id(iteration, task),
                    "prompt": task,
                    "source": "generated",
                    "iteration": iteration,
                    "generator": model.label,
                }
            )
    stats = {
        "round": round_index,
        "requests": count,
        "kept": len(rows),
        "surplus": surplus,
        "generated_shots": generated_shot_count(cfg.num_shots, cfg.num_generated_shots, len(generated)),
        "rejected": dict(screen.rejected - rejected_before),
        "output_tokens": sum(c.num_tokens[0] for c in completions),
        "seconds": seconds,
    }
    return pa.Table.from_pylist(rows, schema=schema("prompts")), stats


def _resume_round(target: str, producer: dict, screen: PromptFilter) -> tuple[pa.Table, dict] | None:
    """A round committed by an earlier run from the same inputs: its prompts join the filter's memory."""
    if not artifacts.is_committed(target):
        return None
    manifest = artifacts.read_manifest(target)
    if stale_reasons(manifest.producer, producer, ignore=ROUND_IGNORES) != []:
        return None  # made from other seeds, another model or other sampling/filter settings: redo the round
    table = artifacts.read_table(target, "prompts")
    for text in table.column("prompt").to_pylist():
        screen.remember_accepted(text)
    stats = dict(manifest.producer.get("round") or {})
    stats.setdefault("requests", 0)
    return table, stats


def _stored_rounds(uri: str) -> list[dict]:
    """Round statistics of a prompts table committed before they were kept in its producer, read back from its
    shards' producers."""
    rounds = []
    for index in range(10_000):
        shard = artifacts.shard_uri(uri, index)
        if not artifacts.is_committed(shard):
            break
        rounds.append(dict(artifacts.read_manifest(shard).producer.get("round") or {}))
    return rounds


def _rejections(rounds: Sequence[dict]) -> Counter:
    total: Counter = Counter()
    for stats in rounds:
        total.update(stats.get("rejected") or {})
    return total


def _finish(
    ctx: StepContext,
    iteration: int,
    uri: str,
    rounds: list[dict],
    seconds: float,
    *,
    reused: bool,
    wanted: int,
    earlier_tables: Sequence[dict],
) -> StepResult:
    """The summary; `wanted` is prompts.num_prompts as the output was produced with, `earlier_tables` the earlier
    iterations' prompts tables it was screened against (earlier_prompts)."""
    table = artifacts.read_table(uri, "prompts", columns=["prompt"])
    texts = table.column("prompt").to_pylist()
    requests = sum(r.get("requests", 0) for r in rounds)
    screened = requests - sum(r.get("surplus", 0) for r in rounds)
    rejected = _rejections(rounds)
    summary = StepSummary(STEP, iteration, uri, wall_seconds=seconds, reused=reused)
    summary.add("rows", len(texts), "prompts kept", f"{len(texts):,} of {wanted:,} wanted")
    summary.add("rounds", len(rounds))
    summary.add("acceptance_rate", len(texts) / screened if screened else 0.0, "acceptance",
                format_rate(len(texts), screened) + " of screened completions")
    summary.add("rejected", {r: rejected.get(r, 0) for r in REASONS}, "rejected",
                ", ".join(f"{r.replace('_', ' ')} {rejected[r]}" for r in REASONS if rejected.get(r)) or "none")
    summary.add("mean_chars", mean(len(t) for t in texts), "mean length (chars)")
    screened_against = sum(earlier.get("rows", 0) for earlier in earlier_tables)
    committed = sum(1 for earlier in earlier_tables if earlier.get("committed") is not False)
    summary.add("earlier_prompts", screened_against, "earlier prompts",
                f"{screened_against:,} of {committed} earlier iteration(s), screened against" if earlier_tables
                else "none (the run's first iteration)")
    shown = [r["generated_shots"] for r in rounds if "generated_shots" in r]  # absent in rounds of older srlm
    summary.add("generated_shots", shown, "generated shots",
                f"{', '.join(map(str, shown)) or 'none'} per request, by round")
    missing = [str(earlier["iteration"]) for earlier in earlier_tables if earlier.get("committed") is False]
    if missing:
        summary.note(f"iteration(s) {', '.join(missing)} of the run have no committed prompts table; new prompts are "
                     "not screened against them")
    tokens = sum(r.get("output_tokens", 0) for r in rounds)
    gen_seconds = sum(r.get("seconds", 0.0) for r in rounds)
    summary.add("tokens_per_second", tokens_per_second(tokens, gen_seconds, untimed=math.nan), "tokens/s")
    if len(texts) < wanted:
        summary.note(f"only {len(texts)} of {wanted} prompts after {len(rounds)} rounds (prompts.max_rounds)")
    ctx.save_summary(summary)
    return StepResult(uri, summary, reused)
