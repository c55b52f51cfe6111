"""Step `meta_judge` (Meta-Rewarding, run.method: meta_rewarding): the model judges its own judgments.

Per prompt, the candidate whose parsed judgments disagree most has every pair of them compared by the meta-judge in
both orders; the battles, weighted against the meta-judge's position bias, rate each judgment (srlm.judging.meta),
and the best- vs the worst-rated judgment becomes a judge preference pair. The raw meta-judgments are stored
(sharded, resumable) inside the output as `<out>/meta_judgments`; the output is the `judgment_pairs` table, which
the dpo step adds to the actor pairs.

With run.method: self_rewarding the step opens no backend and calls no model: it commits an empty judgment_pairs
table (reused like any output), so `srlm iterate` and the DAG run the same steps for both methods and dpo, which
then reads only the actor pairs, never sees it.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from srlm.errors import DataError
from srlm.formatting import format_rate
from srlm.generation.base import Sampling
from srlm.judging.meta import (
    Battle,
    JudgedResponse,
    JudgmentSample,
    battle_matrix,
    battle_plan,
    elo_ratings,
    judgment_pair,
    load_meta_template,
    parse_meta_verdict,
    position_weights,
    render_meta_prompt,
    response_to_meta_judge,
)
from srlm.judging.template import load_template
from srlm.steps.backends import BackendPool, call_backends
from srlm.steps.checkpoints import ModelRef, call_model
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.judge import TOO_LONG, judge_request, too_long_reasons
from srlm.steps.registry import step
from srlm.steps.reuse import ShardRun, fingerprint, reuse_committed, run_sharded
from srlm.steps.summary import StepSummary, mean
from srlm.store import artifacts
from srlm.store.schemas import schema
from srlm.store.uri import join_uri

STEP = "meta_judge"
META_RECORDS = "meta_judgments"
DROP_REASONS = ("too_few_judgments", "tie")


def meta_judgments_uri(out_uri: str) -> str:
    """The raw meta-judgments behind a judgment_pairs table, stored inside it so they go wherever it goes."""
    return join_uri(out_uri, META_RECORDS)


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `meta_judge` step as the CLI, `srlm iterate` and orchestrated tasks call it (model: judge.model, else
    M_{t-1}, the judge's own model)."""
    candidates_uri, judgments_uri = call.inputs.get("candidates"), call.inputs.get("judgments")
    if ctx.config.run.method != "meta_rewarding":
        return skip_meta_judging(ctx, call.iteration, judgments_uri=judgments_uri, out_uri=call.out, force=call.force)
    with call_backends(ctx, call) as pool:
        return judge_judgments(
            ctx,
            call.iteration,
            model=call_model(ctx, call, ctx.config.judge.model),
            backends=pool,
            candidates_uri=candidates_uri,
            judgments_uri=judgments_uri,
            out_uri=call.out,
            force=call.force,
        )


def skip_meta_judging(
    ctx: StepContext,
    iteration: int,
    *,
    judgments_uri: str | None = None,
    out_uri: str | None = None,
    force: bool = False,
) -> StepResult:
    """self_rewarding: commit an empty judgment_pairs table (no backend, no model)."""
    judgments_uri = judgments_uri or ctx.layout.judgments(iteration)
    out_uri = out_uri or step(STEP).output_uri(ctx.layout, iteration)
    producer = ctx.producer(STEP, iteration, inputs={"judgments": fingerprint(judgments_uri)})
    start = time.perf_counter()
    reused = reuse_committed(out_uri, producer, force=force, what=STEP, echo=ctx.echo, label="judgment pairs")
    if reused is None:
        artifacts.write_table(out_uri, schema("judgment_pairs").empty_table(), "judgment_pairs", producer=producer,
                              force=True)  # fmt: skip
    summary = StepSummary(STEP, iteration, out_uri, wall_seconds=time.perf_counter() - start, reused=reused is not None)
    summary.add("method", ctx.config.run.method, text=f"{ctx.config.run.method}: no meta-judging, no judgment pairs")
    ctx.save_summary(summary)
    return StepResult(out_uri, summary, reused is not None)


def judged_responses(candidates: pa.Table, judgments: pa.Table, where: str) -> dict[str, list[JudgedResponse]]:
    """Per prompt, its candidates with their parsed judgments (by sample_index); every prompt appears."""
    samples: dict[str, list[JudgmentSample]] = defaultdict(list)
    known = set(candidates.column("candidate_id").to_pylist())
    for row in judgments.to_pylist():
        if row["candidate_id"] not in known:
            raise DataError(
                f"{where}: judgment for candidate_id {row['candidate_id']!r}, which is not in the candidates table"
            )
        if row["parse_ok"] and row["score"] is not None:
            samples[row["candidate_id"]].append(
                JudgmentSample(row["sample_index"], row["judgment"], float(row["score"]))
            )
    by_prompt: dict[str, list[JudgedResponse]] = defaultdict(list)
    for row in candidates.to_pylist():
        by_prompt.setdefault(row["prompt_id"], [])
        judged = tuple(sorted(samples.get(row["candidate_id"], []), key=lambda j: j.sample_index))
        by_prompt[row["prompt_id"]].append(
            JudgedResponse(
                row["prompt_id"], row["prompt"], row["candidate_id"], row["candidate_index"], row["response"], judged
            )  # fmt: skip
        )
    return by_prompt


def judge_judgments(
    ctx: StepContext,
    iteration: int,
    *,
    model: ModelRef,
    backends: BackendPool,
    candidates_uri: str | None = None,
    judgments_uri: str | None = None,
    out_uri: str | None = None,
    force: bool = False,
) -> StepResult:
    """Meta-judge the iteration's judgments; writes `<out>/meta_judgments` (sharded) and the `judgment_pairs` table."""
    cfg = ctx.config.meta_rewarding
    template = load_meta_template(cfg.template)
    judge_template = load_template(ctx.config.judge.template)
    candidates_uri = candidates_uri or ctx.layout.candidates(iteration)
    judgments_uri = judgments_uri or ctx.layout.judgments(iteration)
    out_uri = out_uri or step(STEP).output_uri(ctx.layout, iteration)
    inputs = {
        "candidates": fingerprint(candidates_uri),
        "judgments": fingerprint(judgments_uri),
        "model": model.as_input(),
        "template": _digest(template),
        "judge_template": _digest(judge_template),
    }
    producer = ctx.producer(STEP, iteration, inputs=inputs)
    start = time.perf_counter()
    if reuse_committed(out_uri, producer, force=force, what=STEP, echo=ctx.echo, label="judgment pairs") is not None:
        return _finish(ctx, iteration, out_uri, ShardRun(), Counter(), time.perf_counter() - start, reused=True)

    candidates = artifacts.read_table(
        candidates_uri, "candidates", columns=["prompt_id", "candidate_id", "candidate_index", "prompt", "response"]
    )
    judgments = artifacts.read_table(
        judgments_uri, "judgments", columns=["candidate_id", "sample_index", "judgment", "score", "parse_ok"]
    )
    drops: Counter = Counter()
    selected: dict[str, JudgedResponse] = {}
    for prompt_id, responses in judged_responses(candidates, judgments, judgments_uri).items():
        chosen = response_to_meta_judge(responses, cfg.max_judgments)
        if chosen is None:
            drops["too_few_judgments"] += 1
        else:
            selected[prompt_id] = chosen
    items = [{"prompt_id": pid} for pid in selected]
    sampling = Sampling(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    prompt_budget = ctx.config.backend.max_model_len - cfg.max_new_tokens

    def make_shard(chunk: Sequence[dict], run: ShardRun) -> pa.Table:
        backend = backends.get(model)
        requests, keys = [], []
        for item in chunk:
            judged = selected[item["prompt_id"]]
            for first, second in battle_plan(len(judged.judgments)):
                a, b = judged.judgments[first], judged.judgments[second]
                content = render_meta_prompt(template, judged.prompt, judged.response, a.text, b.text)
                requests.append([{"role": "user", "content": content}])
                keys.append((judged, a.sample_index, b.sample_index))
        # A comparison whose prompt (the rubric, the response and two judgments) leaves no room for its verdict is
        # set aside, as the judge step does: a row saying why, never a verdict, and the shard still commits.
        too_long = too_long_reasons(backend, requests, prompt_budget)
        fitting = [r for r, reason in zip(requests, too_long, strict=True) if reason is None]
        answered = run.generate(backend, fitting, sampling, progress=ctx.progress) if fitting else []
        if len(answered) != len(fitting):
            raise DataError(f"{backend.name} backend returned {len(answered)} completions for {len(fitting)} requests")
        completions = iter(answered)
        rows = []
        for (judged, first, second), reason in zip(keys, too_long, strict=True):
            text = "" if reason is not None else next(completions).texts[0]
            verdict = parse_meta_verdict(text)
            rows.append(
                {
                    "prompt_id": judged.prompt_id,
                    "candidate_id": judged.candidate_id,
                    "first_sample_index": first,
                    "second_sample_index": second,
                    "meta_judgment": text,
                    "winner": verdict.winner,
                    "parse_ok": verdict.ok,
                    "parse_error": reason or verdict.error,
                    "judge_model": model.label,
                }
            )
        return pa.Table.from_pylist(rows, schema=schema(META_RECORDS))

    records_uri = meta_judgments_uri(out_uri)
    run = run_sharded(records_uri, items, cfg.shard_size, schema_name=META_RECORDS, key_column="prompt_id",
                      make_shard=make_shard, producer=producer, what=STEP, force=force)  # fmt: skip
    records = artifacts.read_table(records_uri, META_RECORDS).to_pylist()
    rows = judgment_pair_rows(
        selected, records, judge_template, drops, injection_guard=ctx.config.judge.injection_guard
    )
    artifacts.write_table(out_uri, pa.Table.from_pylist(rows, schema=schema("judgment_pairs")), "judgment_pairs",
                          producer=producer, force=True)  # fmt: skip
    return _finish(ctx, iteration, out_uri, run, drops, time.perf_counter() - start, reused=False)


def judgment_pair_rows(
    selected: dict[str, JudgedResponse],
    records: Sequence[dict],
    judge_template: str,
    drops: Counter,
    *,
    injection_guard: bool = False,
) -> list[dict]:
    """The judgment_pairs rows from the meta-judgments of the selected responses. The position weights are the
    iteration's (every meta-judgment counts towards them); ties are counted in `drops`."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_prompt[record["prompt_id"]].append(record)
    every = [Battle(0, 1, r["winner"]) for r in records]  # positions only: which slot won
    weights = position_weights(every)
    rows = []
    for prompt_id, judged in selected.items():
        slot = {j.sample_index: i for i, j in enumerate(judged.judgments)}
        battles = [
            Battle(slot[r["first_sample_index"]], slot[r["second_sample_index"]], r["winner"])
            for r in by_prompt.get(prompt_id, [])
        ]
        ratings = elo_ratings(battle_matrix(len(judged.judgments), battles, weights))
        pair = judgment_pair(ratings)
        if pair is None:
            drops["tie"] += 1
            continue
        chosen, rejected = (judged.judgments[i] for i in pair)
        (judge_turn,) = judge_request(  # the prompt as the judge saw it
            judge_template, judged.prompt, judged.response, injection_guard=injection_guard
        )
        rows.append(
            {
                "prompt_id": prompt_id,
                "candidate_id": judged.candidate_id,
                "prompt": judge_turn["content"],
                "chosen": chosen.text,
                "rejected": rejected.text,
                "chosen_sample_index": chosen.sample_index,
                "rejected_sample_index": rejected.sample_index,
                "chosen_elo": ratings[pair[0]],
                "rejected_elo": ratings[pair[1]],
                "chosen_score": chosen.score,
                "rejected_score": rejected.score,
                "battles": sum(1 for b in battles if b.winner is not None),
            }
        )
    return rows


def _digest(text: str) -> dict[str, str]:
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _finish(
    ctx: StepContext, iteration: int, uri: str, run: ShardRun, drops: Counter, seconds: float, *, reused: bool
) -> StepResult:
    pairs = artifacts.read_table(uri, "judgment_pairs")
    records = artifacts.read_table(
        meta_judgments_uri(uri), META_RECORDS, columns=["prompt_id", "winner", "parse_ok", "parse_error"]
    )
    summary = StepSummary(STEP, iteration, uri, wall_seconds=seconds, reused=reused)
    set_aside = sum(1 for e in records.column("parse_error").to_pylist() if e and e.startswith(TOO_LONG))
    calls = records.num_rows - set_aside  # meta-judgments the model wrote
    parsed = (pc.sum(records.column("parse_ok")).as_py() or 0) if calls else 0
    first = sum(1 for w in records.column("winner").to_pylist() if w == "A")
    judged = pc.count_distinct(records.column("prompt_id")).as_py() if calls else 0
    summary.add(
        "rows", pairs.num_rows, "judgment pairs", format_rate(pairs.num_rows, judged) + " of meta-judged prompts"
    )
    summary.add("meta_judgments", calls, "meta-judgments", f"{calls:,} for {judged:,} prompts")
    summary.add("parse_rate", parsed / calls if calls else 0.0, "parse rate", format_rate(parsed, calls))
    summary.add(
        "set_aside_too_long", set_aside, "set aside", f"{set_aside:,} comparisons: prompt too long for the context"
    )
    if set_aside:
        summary.note(
            f"{set_aside:,} comparisons were not meta-judged: their prompt leaves less than "
            "meta_rewarding.max_new_tokens within backend.max_model_len (raise it, or lower judge.max_new_tokens)"
        )
    summary.add("first_position_win_rate", first / parsed if parsed else 0.0, "judgment A wins",
                format_rate(first, parsed) + " of verdicts (0.5 = no position bias)")  # fmt: skip
    if not reused:
        summary.add("dropped", {r: drops[r] for r in DROP_REASONS}, "dropped",
                    ", ".join(f"{r.replace('_', ' ')} {drops[r]}" for r in DROP_REASONS))  # fmt: skip
    summary.add("mean_elo_gap", mean(c - r for c, r in zip(pairs.column("chosen_elo").to_pylist(),
                                                           pairs.column("rejected_elo").to_pylist(), strict=True)),
                "mean Elo gap")  # fmt: skip
    if run.shards:
        summary.add("shards", run.shards, text=f"{run.shards} ({run.reused} reused)")
        summary.add("tokens_per_second", run.tokens_per_second, "tokens/s (new)")
    if calls and parsed / calls < 0.5:
        summary.note("fewer than half of the meta-judgments end in 'Winner: Judgment A|B'")
    ctx.save_summary(summary)
    return StepResult(uri, summary, reused)
