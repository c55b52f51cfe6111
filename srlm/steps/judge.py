"""Step `judge`: the model scores each candidate with the paper's additive 5-point rubric, K samples each.

Every sample is stored with its raw text; the score is read from the judge's own final `Score: N` only
(srlm.judging.parse). A judgment without one is kept with parse_ok = false and its reason, and counted in the
parse rate — it is never turned into a score. A candidate whose judge prompt leaves less than judge.max_new_tokens
of room within backend.max_model_len is set aside rather than failing its shard: it gets one row with parse_ok false
and the reason (counted as set_aside_too_long, not in the parse rate), and so never a score.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from srlm.errors import DataError
from srlm.formatting import format_rate
from srlm.generation.base import Sampling
from srlm.judging.parse import parse_score
from srlm.judging.rubric import judge_messages
from srlm.judging.scores import score_histogram
from srlm.judging.template import load_template, render_judge_prompt
from srlm.steps.backends import BackendPool, call_backends
from srlm.steps.checkpoints import ModelRef, call_model
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import step
from srlm.steps.reuse import ShardRun, fingerprint, reuse_committed, run_sharded
from srlm.steps.summary import StepSummary
from srlm.store import artifacts
from srlm.store.schemas import schema

STEP = "judge"
# The parse_error of a candidate set aside because its judge prompt does not fit the context.
TOO_LONG = "prompt exceeds context"


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `judge` step as the CLI, `srlm iterate` and orchestrated tasks call it (judge.model, else M_{t-1})."""
    with call_backends(ctx, call) as pool:
        return judge_candidates(
            ctx, call.iteration, model=call_model(ctx, call, ctx.config.judge.model), backends=pool,
            candidates_uri=call.inputs.get("candidates"), out_uri=call.out, force=call.force,
        )


def judge_request(
    template: str, prompt: str, response: str, *, injection_guard: bool = False
) -> list[dict[str, str]]:
    """The judge sees the filled rubric as one user turn, exactly as the EFT seed examples present it."""
    return judge_messages(render_judge_prompt(template, prompt, response, injection_guard=injection_guard))


def judge_candidates(
    ctx: StepContext,
    iteration: int,
    *,
    model: ModelRef,
    backends: BackendPool,
    candidates_uri: str | None = None,
    out_uri: str | None = None,
    force: bool = False,
) -> StepResult:
    """Sample `judge.num_samples` judgments per candidate; writes the `judgments` table (sharded, resumable)."""
    cfg = ctx.config.judge
    template = load_template(cfg.template)
    candidates_uri = candidates_uri or ctx.layout.candidates(iteration)
    out_uri = out_uri or step(STEP).output_uri(ctx.layout, iteration)
    inputs = {"candidates": fingerprint(candidates_uri), "model": model.as_input(), "template": _digest(template)}
    producer = ctx.producer(STEP, iteration, inputs=inputs)
    start = time.perf_counter()
    if reuse_committed(out_uri, producer, force=force, what=STEP, echo=ctx.echo, label="judgments") is not None:
        return _finish(ctx, iteration, out_uri, ShardRun(), time.perf_counter() - start, reused=True)

    candidates = artifacts.read_table(
        candidates_uri, "candidates", columns=["prompt_id", "candidate_id", "prompt", "response"]
    ).to_pylist()
    sampling = Sampling(n=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)

    prompt_budget = ctx.config.backend.max_model_len - cfg.max_new_tokens

    def make_shard(chunk: Sequence[dict], run: ShardRun) -> pa.Table:
        backend = backends.get(model)
        requests = [
            judge_request(template, c["prompt"], c["response"], injection_guard=cfg.injection_guard) for c in chunk
        ]
        too_long = too_long_reasons(backend, requests, prompt_budget)
        judged = [r for r, reason in zip(requests, too_long, strict=True) if reason is None]
        answered = run.generate(backend, judged, sampling, progress=ctx.progress) if judged else []
        if len(answered) != len(judged):
            raise DataError(f"{backend.name} backend returned {len(answered)} completions for {len(judged)} requests")
        completions = iter(answered)
        rows = []
        for candidate, reason in zip(chunk, too_long, strict=True):
            row = {"prompt_id": candidate["prompt_id"], "candidate_id": candidate["candidate_id"],
                   "judge_model": model.label}  # fmt: skip
            if reason is not None:  # one row saying why, never a score
                rows.append({**row, "sample_index": 0, "judgment": "", "score": None, "parse_ok": False,
                             "parse_error": reason})  # fmt: skip
                continue
            for index, text in enumerate(next(completions).texts):
                parsed = parse_score(text)
                rows.append({**row, "sample_index": index, "judgment": text, "score": parsed.score,
                             "parse_ok": parsed.ok, "parse_error": parsed.error})  # fmt: skip
        return pa.Table.from_pylist(rows, schema=schema("judgments"))

    run = run_sharded(out_uri, candidates, cfg.shard_size, schema_name="judgments", key_column="candidate_id",
                      make_shard=make_shard, producer=producer, what=STEP, force=force)  # fmt: skip
    return _finish(ctx, iteration, out_uri, run, time.perf_counter() - start, reused=False)


def too_long_reasons(backend, requests: Sequence, prompt_budget: int) -> list[str | None]:
    """Per request, why it is set aside (its prompt has more than `prompt_budget` tokens), or None when it fits.
    Counted with the backend's own tokenizer and chat template, as it will tokenize the request; a backend that
    cannot count tokens still says which prompts leave no room at all (GenerationBackend.fits)."""
    counts = backend.prompt_token_counts(requests)
    if counts is None:
        return [None if fits else f"{TOO_LONG} (no room to generate)" for fits in backend.fits(requests)]
    return [None if n <= prompt_budget else f"{TOO_LONG} ({n} > {prompt_budget} tokens)" for n in counts]


def _digest(text: str) -> dict[str, str]:
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _finish(ctx: StepContext, iteration: int, uri: str, run: ShardRun, seconds: float, *, reused: bool) -> StepResult:
    table = artifacts.read_table(uri, "judgments", columns=["candidate_id", "score", "parse_ok", "parse_error"])
    summary = StepSummary(STEP, iteration, uri, wall_seconds=seconds, reused=reused)
    candidates = pc.count_distinct(table.column("candidate_id")).as_py() if table.num_rows else 0
    errors_column = table.column("parse_error").to_pylist()
    set_aside = sum(1 for e in errors_column if e and e.startswith(TOO_LONG))
    rows = table.num_rows - set_aside  # judgments the judge wrote
    parsed = (pc.sum(table.column("parse_ok")).as_py() or 0) if rows else 0
    scored = (
        pc.count_distinct(table.filter(table.column("parse_ok")).column("candidate_id")).as_py() if parsed else 0
    )
    summary.add("rows", rows, text=f"{rows:,} judgments of {candidates:,} candidates")
    summary.add("parse_rate", parsed / rows if rows else 0.0, "parse rate", format_rate(parsed, rows))
    summary.add("candidates_scored", scored, "candidates scored", format_rate(scored, candidates))
    summary.add("set_aside_too_long", set_aside, "set aside",
                f"{format_rate(set_aside, candidates)} of candidates: judge prompt too long for the context")
    if set_aside:
        summary.note(f"{set_aside:,} candidates were not judged: their judge prompt leaves less than "
                     "judge.max_new_tokens within backend.max_model_len (raise it, or lower generate.max_new_tokens)")
    summary.add_histogram("scores", score_histogram(s for s in table.column("score").to_pylist() if s is not None))
    errors = Counter(e for e in errors_column if e and not e.startswith(TOO_LONG))
    if errors:
        top = "; ".join(f"{reason} ×{count}" for reason, count in errors.most_common(3))
        summary.add("parse_errors", dict(errors), "unparsed because", top)
    if run.shards:
        summary.add("shards", run.shards, text=f"{run.shards} ({run.reused} reused)")
        summary.add("tokens_per_second", run.tokens_per_second, "tokens/s (new)")
    if rows and parsed / rows < 0.5:
        summary.note("fewer than half of the judgments end in 'Score: N': is the model EFT-trained (srlm sft)?")
    ctx.save_summary(summary)
    return StepResult(uri, summary, reused)
