"""Step `pairs`: per prompt, the candidate with the highest mean judge score against the one with the lowest.

A candidate's score is the mean over its *parsed* judgments only; a candidate with fewer than
`judge.min_parsed_samples` of them (default: all K) does not compete (never scored 0, which would make a judge
failure look like a bad response, and never a mean of fewer samples than its rivals', which is biased toward the
extremes). Prompts whose competing candidates all share one mean are ties and dropped, as in the paper; `min_margin`
drops near-ties too. With `generate.drop_truncated` a candidate cut off at max_new_tokens is never the chosen side
(it may still be rejected). Optional length control (off by default, not in the paper) picks the shortest candidate
among those within a tolerance of the top score, to counter the length growth that DPO on self-judged pairs tends to
cause.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from srlm.config import PairsConfig
from srlm.errors import DataError
from srlm.formatting import format_number, format_rate
from srlm.judging.meta import length_controlled_chosen
from srlm.judging.scores import parsed_scores, score_histogram
from srlm.steps.context import StepCall, StepContext, StepResult
from srlm.steps.registry import step
from srlm.steps.reuse import fingerprint, reuse_committed
from srlm.steps.summary import StepSummary, mean
from srlm.store import artifacts
from srlm.store.schemas import schema

STEP = "pairs"
# Means of a few small integers: equal means come out bit-identical, but stay safe against rounding.
_EPS = 1e-9
DROP_REASONS = ("too_few_scored", "tie", "truncated", "below_margin")


@dataclass(frozen=True)
class ScoredCandidate:
    prompt_id: str
    prompt: str
    candidate_id: str
    candidate_index: int
    response: str
    num_tokens: int | None
    mean_score: float
    num_scores: int
    truncated: bool = False  # cut off at generate.max_new_tokens (finish reason "length")


def select_pair(
    candidates: Sequence[ScoredCandidate],
    cfg: PairsConfig,
    *,
    drop_truncated: bool = False,
    length_control_rho: float | None = None,
) -> tuple[tuple[ScoredCandidate, ScoredCandidate] | None, str | None]:
    """(chosen, rejected) for one prompt's competing candidates, or (None, drop reason). `drop_truncated`: a
    truncated candidate may be rejected but never chosen. `length_control_rho` (run.method meta_rewarding):
    Meta-Rewarding's rule picks the chosen side (srlm.judging.meta.length_controlled_chosen) instead of
    pairs.length_control."""
    if len(candidates) < 2:
        return None, "too_few_scored"
    ordered = sorted(candidates, key=lambda c: c.candidate_index)  # deterministic among equal scores
    top = max(c.mean_score for c in ordered)
    bottom = min(c.mean_score for c in ordered)
    if top - bottom <= _EPS:
        return None, "tie"
    choosable = [c for c in ordered if not (drop_truncated and c.truncated)]
    if not choosable or max(c.mean_score for c in choosable) <= bottom + _EPS:
        return None, "truncated"  # only truncated candidates score above the lowest
    if length_control_rho is None:
        chosen = _choose(choosable, cfg)
    else:
        chosen = length_controlled_chosen(choosable, length_control_rho, bottom=bottom)
    rejected = min((c for c in ordered if c is not chosen), key=lambda c: (c.mean_score, c.candidate_index))
    margin = chosen.mean_score - rejected.mean_score
    if margin <= max(cfg.min_margin, 0.0) + _EPS:
        return None, "below_margin"
    return (chosen, rejected), None


def _choose(choosable: Sequence[ScoredCandidate], cfg: PairsConfig) -> ScoredCandidate:
    """The chosen side among the candidates allowed to be chosen (in candidate order): the first with the top mean
    (the paper), or with length control the shortest within the tolerance of that top."""
    top = max(c.mean_score for c in choosable)
    if cfg.length_control:
        near_top = [c for c in choosable if c.mean_score >= top - cfg.length_control_tolerance - _EPS]
        return min(near_top, key=lambda c: (len(c.response), -c.mean_score, c.candidate_index))
    return next(c for c in choosable if c.mean_score >= top - _EPS)


def competing_candidates(
    by_prompt: dict[str, list[ScoredCandidate]], min_scores: int
) -> tuple[dict[str, list[ScoredCandidate]], int]:
    """Per prompt, the candidates with at least `min_scores` parsed judgments, and how many were left out."""
    competing = {pid: [c for c in scored if c.num_scores >= min_scores] for pid, scored in by_prompt.items()}
    left_out = sum(len(scored) for scored in by_prompt.values()) - sum(len(c) for c in competing.values())
    return competing, left_out


def scored_candidates(candidates: pa.Table, judgments: pa.Table, where: str) -> dict[str, list[ScoredCandidate]]:
    """Per prompt, the candidates that have at least one parsed judgment, with their mean parsed score."""
    scores = parsed_scores(judgments)
    known = set(candidates.column("candidate_id").to_pylist())
    for cid in scores:
        if cid not in known:
            raise DataError(f"{where}: judgment for candidate_id {cid!r}, which is not in the candidates table")
    by_prompt: dict[str, list[ScoredCandidate]] = defaultdict(list)
    for row in candidates.to_pylist():
        by_prompt.setdefault(row["prompt_id"], [])
        values = scores.get(row["candidate_id"])
        if not values:
            continue
        by_prompt[row["prompt_id"]].append(
            ScoredCandidate(
                prompt_id=row["prompt_id"],
                prompt=row["prompt"],
                candidate_id=row["candidate_id"],
                candidate_index=row["candidate_index"],
                response=row["response"],
                num_tokens=row["num_tokens"],
                mean_score=sum(values) / len(values),
                num_scores=len(values),
                truncated=row.get("finish_reason") == "length",
            )
        )
    return by_prompt


def pair_row(chosen: ScoredCandidate, rejected: ScoredCandidate) -> dict:
    return {
        "prompt_id": chosen.prompt_id,
        "prompt": chosen.prompt,
        "chosen": chosen.response,
        "rejected": rejected.response,
        "chosen_candidate_id": chosen.candidate_id,
        "rejected_candidate_id": rejected.candidate_id,
        "chosen_score": chosen.mean_score,
        "rejected_score": rejected.mean_score,
        "margin": chosen.mean_score - rejected.mean_score,
        "chosen_chars": len(chosen.response),
        "rejected_chars": len(rejected.response),
        "chosen_tokens": chosen.num_tokens,
        "rejected_tokens": rejected.num_tokens,
    }


def build_pairs(
    ctx: StepContext,
    iteration: int,
    *,
    candidates_uri: str | None = None,
    judgments_uri: str | None = None,
    out_uri: str | None = None,
    force: bool = False,
) -> StepResult:
    """Writes the `pairs` table (possibly empty: the summary says why; the DPO step refuses zero pairs)."""
    cfg = ctx.config.pairs
    candidates_uri = candidates_uri or ctx.layout.candidates(iteration)
    judgments_uri = judgments_uri or ctx.layout.judgments(iteration)
    out_uri = out_uri or step(STEP).output_uri(ctx.layout, iteration)
    inputs = {"candidates": fingerprint(candidates_uri), "judgments": fingerprint(judgments_uri)}
    producer = ctx.producer(STEP, iteration, inputs=inputs)
    start = time.perf_counter()
    candidates = artifacts.read_table(candidates_uri, "candidates")
    judgments = artifacts.read_table(judgments_uri, "judgments", columns=["candidate_id", "score", "parse_ok"])
    min_scores = ctx.config.judge.required_parsed_samples
    drop_truncated = ctx.config.generate.drop_truncated
    meta = ctx.config.run.method == "meta_rewarding"
    rho = ctx.config.meta_rewarding.length_control_rho if meta else None
    by_prompt, too_few_parsed = competing_candidates(
        scored_candidates(candidates, judgments, judgments_uri), min_scores
    )

    drops: Counter = Counter()
    rows = []
    for scored in by_prompt.values():
        pair, reason = select_pair(scored, cfg, drop_truncated=drop_truncated, length_control_rho=rho)
        if pair is None:
            drops[reason] += 1
        else:
            rows.append(pair_row(*pair))
    left_out = LeftOut(too_few_parsed, min_scores, ctx.config.judge.num_samples, drop_truncated)
    reused = reuse_committed(out_uri, producer, force=force, what=STEP, echo=ctx.echo, label="pairs") is not None
    if not reused:
        table = pa.Table.from_pylist(rows, schema=schema("pairs"))
        artifacts.write_table(out_uri, table, "pairs", producer=producer, force=True)
    pairs = artifacts.read_table(out_uri, "pairs")
    summary = _summary(ctx, iteration, out_uri, pairs, by_prompt, drops, left_out, time.perf_counter() - start, reused)
    return StepResult(out_uri, summary, reused)


def run_step(ctx: StepContext, call: StepCall) -> StepResult:
    """The `pairs` step as the CLI, `srlm iterate` and orchestrated tasks call it."""
    return build_pairs(
        ctx, call.iteration, candidates_uri=call.inputs.get("candidates"), judgments_uri=call.inputs.get("judgments"),
        out_uri=call.out, force=call.force,
    )


def _summary(
    ctx: StepContext,
    iteration: int,
    uri: str,
    pairs: pa.Table,
    by_prompt: dict[str, list[ScoredCandidate]],
    drops: Counter,
    left_out: LeftOut,
    seconds: float,
    reused: bool,
) -> StepSummary:
    summary = StepSummary(STEP, iteration, uri, wall_seconds=seconds, reused=reused)
    prompts = len(by_prompt)
    contested = prompts - drops["too_few_scored"]  # prompts with at least two scored candidates
    summary.add("rows", pairs.num_rows, "pairs", format_rate(pairs.num_rows, prompts) + " of prompts")
    summary.add("prompts", prompts)
    summary.add("tie_rate", drops["tie"] / contested if contested else 0.0, "tie rate", format_rate(drops["tie"], contested))
    summary.add("dropped", {r: drops[r] for r in DROP_REASONS}, "dropped",
                ", ".join(f"{r.replace('_', ' ')} {drops[r]}" for r in DROP_REASONS))
    summary.add("candidates_too_few_parsed", left_out.too_few_parsed, "not competing",
                f"{left_out.too_few_parsed:,} candidates with fewer than {left_out.min_scores} of "
                f"{left_out.num_samples} judgments parsed")
    truncated = sum(c.truncated for scored in by_prompt.values() for c in scored)
    excluded = truncated if left_out.drop_truncated else 0
    summary.metrics["truncated_candidates"] = truncated
    summary.add("truncated_excluded", excluded, "truncated",
                f"{truncated:,} competing candidates hit max tokens; {excluded:,} kept from being chosen"
                + ("" if left_out.drop_truncated else " (generate.drop_truncated is off)"))
    summary.add("mean_margin", mean(pairs.column("margin").to_pylist()), "mean margin")
    for side in ("chosen", "rejected"):
        chars = mean(pairs.column(f"{side}_chars").to_pylist())
        tokens = mean(pairs.column(f"{side}_tokens").to_pylist())
        summary.metrics[f"{side}_mean_chars"] = chars
        summary.metrics[f"{side}_mean_tokens"] = tokens
        summary.lines.append((f"{side} length", f"{format_number(chars, ',.1f')} chars, {format_number(tokens, ',.1f')} tokens"))
    summary.add_histogram("candidate_mean_scores", score_histogram(_means(by_prompt)), "candidate scores")
    if pairs.num_rows == 0:
        summary.note("no preference pairs: DPO cannot run on this iteration (see parse rate and tie rate)")
    ctx.save_summary(summary)
    return summary


@dataclass(frozen=True)
class LeftOut:
    """What the summary says about candidates kept from competing or from being chosen."""

    too_few_parsed: int  # candidates with some, but fewer than min_scores, parsed judgments
    min_scores: int
    num_samples: int
    drop_truncated: bool


def _means(by_prompt: dict[str, list[ScoredCandidate]]) -> Iterable[float]:
    for scored in by_prompt.values():
        for candidate in scored:
            yield candidate.mean_score


