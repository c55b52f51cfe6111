"""How well a model judges: its additive 5-point scores against human rankings (Yuan et al., 2024, Table 4).

Every response of every human-ranked group (`eval_groups`, e.g. from `srlm data import --format oasst`) is
scored by the model with the judge template, K samples averaged, read with srlm.judging.parse like the `judge`
step. Definitions (human_rank 0 = best; equal ranks are human ties):

- pairwise_accuracy: over pairs of responses in a group that humans ordered (different ranks), the fraction the
  model orders the same way; a model tie (equal mean scores) counts 0.5, the expected accuracy of breaking it at
  random. `model_tie_rate` says how often that happened.
- exact_match: fraction of groups whose model ordering equals the human ordering on every pair (ties must
  match ties).
- five_best: the paper's "5-best %": of the responses the model scores a perfect 5 (all K samples 5), the
  fraction that humans ranked best in their group. `best_scored_five` is the converse: the fraction of groups
  whose human-best response got a perfect 5.
- spearman / kendall_tau: scipy.stats.spearmanr / kendalltau (tau-b, ties handled by scipy) between model score
  and human preference (-rank), per group, averaged over groups. A group whose model scores are all equal carries
  no ranking and counts as 0 (scipy gives nan; leaving it out would hide a judge that scores everything alike);
  a group whose human ranks are all equal is left out of the correlations.
- Unparsed responses: a response none of whose K judgments holds a parsable "Score: N" has no score. It is left
  out of every pair and group statistic (a group keeps its scored responses; with fewer than two it drops out of
  the group statistics). parse_rate = parsed judgments / all judgments; response_parse_rate = scored responses /
  judged responses.
- Responses too long to judge: a response whose judge prompt leaves no room to generate within
  backend.max_model_len is not sent to the judge (real OpenAssistant replies run to thousands of tokens). It is
  left out like an unparsed response, but counted apart, in n_responses_too_long, and not in the parse rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from srlm.errors import DataError
from srlm.formatting import format_number, format_percent
from srlm.judging.parse import MAX_SCORE, parse_score
from srlm.judging.scores import score_histogram
from srlm.judging.template import render_judge_prompt


@dataclass
class RankedResponse:
    response_id: str
    response: str
    human_rank: int
    scores: list[float | None] = field(default_factory=list)  # one per judge sample; None = unparsed
    too_long: bool = False  # its judge prompt does not fit the judge's context, so it was not judged

    @property
    def score(self) -> float | None:
        parsed = [s for s in self.scores if s is not None]
        return float(np.mean(parsed)) if parsed else None


@dataclass
class RankedGroup:
    group_id: str
    prompt_messages: list[dict[str, str]]
    responses: list[RankedResponse]


@dataclass
class RewardModelMetrics:
    pairwise_accuracy: float | None
    exact_match: float | None
    five_best: float | None
    best_scored_five: float | None
    spearman: float | None
    kendall_tau: float | None
    n_groups: int
    n_pairs: int
    parse_rate: float | None
    response_parse_rate: float | None
    model_tie_rate: float | None
    n_perfect_five: int
    n_groups_ranked: int  # groups with at least two scored responses
    n_groups_correlated: int
    mean_score: float | None
    score_histogram: dict[str, int]
    n_responses_too_long: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def headline(self) -> dict[str, float | None]:
        """The metrics that go into eval_results, as (name -> value)."""
        return {
            "pairwise_accuracy": self.pairwise_accuracy,
            "exact_match": self.exact_match,
            "five_best": self.five_best,
            "best_scored_five": self.best_scored_five,
            "spearman": self.spearman,
            "kendall_tau": self.kendall_tau,
            "parse_rate": self.parse_rate,
            "response_parse_rate": self.response_parse_rate,
            "model_tie_rate": self.model_tie_rate,
            "mean_score": self.mean_score,
        }

    def to_text(self) -> str:
        pct = format_percent

        def num(v: float | None) -> str:
            return format_number(v, ".3f")

        hist = " ".join(f"{k}:{v}" for k, v in self.score_histogram.items())
        return "\n".join(
            [
                f"reward-model metrics over {self.n_groups} groups ({self.n_groups_ranked} with ≥2 scored responses), "
                f"{self.n_pairs} human-ordered pairs",
                f"  pairwise accuracy  {pct(self.pairwise_accuracy)}  (model ties {pct(self.model_tie_rate)}, counted 0.5)",
                f"  exact match        {pct(self.exact_match)}",
                f"  5-best             {pct(self.five_best)}  ({self.n_perfect_five} responses scored a perfect 5)",
                f"  best scored 5      {pct(self.best_scored_five)}",
                f"  spearman           {num(self.spearman)}",
                f"  kendall tau        {num(self.kendall_tau)}",
                f"  parse rate         {pct(self.parse_rate)} of judgments, {pct(self.response_parse_rate)} of responses",
                f"  mean score         {num(self.mean_score)}   histogram (rounded): {hist}",
            ]
            + (
                [f"  not judged         {self.n_responses_too_long} responses too long for backend.max_model_len"]
                if self.n_responses_too_long
                else []
            )
        )


def groups_from_table(table, *, first_turn_only: bool = True) -> list[RankedGroup]:
    """RankedGroups from an `eval_groups` table, in table order. first_turn_only keeps groups whose prompt is a
    single user message (the paper evaluates first turns)."""
    groups: dict[str, RankedGroup] = {}
    for row in table.to_pylist():
        group = groups.get(row["group_id"])
        if group is None:
            group = groups[row["group_id"]] = RankedGroup(row["group_id"], row["prompt_messages"], [])
        group.responses.append(RankedResponse(row["response_id"], row["response"], int(row["human_rank"])))
    out = list(groups.values())
    if first_turn_only:
        out = [g for g in out if len(g.prompt_messages) == 1 and g.prompt_messages[0]["role"] == "user"]
    return out


def judge_instruction(messages: Sequence[dict[str, str]]) -> str:
    """The text the rubric's `User: {instruction}` slot gets: the user turn, or for a longer conversation the
    earlier turns as a transcript followed by the last user turn."""
    if not messages:
        raise DataError("eval group has an empty prompt")
    if len(messages) == 1:
        return messages[0]["content"]
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    history = "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages[:-1])
    return f"[Conversation so far]\n{history}\n[End of conversation]\n\n{messages[-1]['content']}"


def score_groups(
    groups: Sequence[RankedGroup],
    backend,
    *,
    template: str,
    num_samples: int = 3,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
) -> list[RankedGroup]:
    """Fill every response's `scores` with K judge samples from `backend` (in place; returns `groups`). Responses
    whose judge prompt does not fit the backend's context are marked `too_long` and not judged."""
    from srlm.generation.base import Sampling

    if num_samples < 1:
        raise DataError(f"judge.num_samples: must be at least 1, got {num_samples}")
    responses = [(g, r) for g in groups for r in g.responses]
    requests = [
        [{"role": "user", "content": render_judge_prompt(template, judge_instruction(g.prompt_messages), r.response)}]
        for g, r in responses
    ]
    sampling = Sampling(n=num_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    judged = []
    for (_, response), request, fits in zip(responses, requests, backend.fits(requests), strict=True):
        response.too_long = not fits
        if fits:
            judged.append((response, request))
    completions = backend.generate([request for _, request in judged], sampling) if judged else []
    for (response, _), completion in zip(judged, completions, strict=True):
        response.scores = [parse_score(text).score for text in completion.texts]
    return list(groups)


def reward_model_metrics(groups: Sequence[RankedGroup]) -> RewardModelMetrics:
    """All metrics of scored groups (see the module docstring for the definitions)."""
    from scipy import stats

    samples = [s for g in groups for r in g.responses for s in r.scores]
    n_samples_parsed = sum(1 for s in samples if s is not None)
    all_responses = [r for g in groups for r in g.responses if not r.too_long]
    scored_all = [r for r in all_responses if r.score is not None]

    pair_credit: list[float] = []
    exact: list[bool] = []
    spearman: list[float] = []
    kendall: list[float] = []
    five_total = five_best = 0
    best_groups = best_five_groups = 0
    for group in groups:
        scored = [r for r in group.responses if r.score is not None]
        for r in scored:
            if r.score >= MAX_SCORE:
                five_total += 1
                five_best += r.human_rank == 0
        best = [r for r in scored if r.human_rank == 0]
        if best:
            best_groups += 1
            best_five_groups += any(r.score >= MAX_SCORE for r in best)
        if len(scored) < 2:
            continue
        all_match = True
        for i in range(len(scored)):
            for j in range(i + 1, len(scored)):
                a, b = scored[i], scored[j]
                human = np.sign(b.human_rank - a.human_rank)  # +1: humans prefer a
                model = np.sign(a.score - b.score)
                all_match &= bool(human == model)
                if human != 0:
                    pair_credit.append(0.5 if model == 0 else float(model == human))
        exact.append(all_match)
        ranks = np.array([-r.human_rank for r in scored], dtype=float)
        scores = np.array([r.score for r in scored], dtype=float)
        if np.ptp(ranks) == 0:
            continue
        if np.ptp(scores) == 0:
            spearman.append(0.0)
            kendall.append(0.0)
        else:
            spearman.append(float(stats.spearmanr(scores, ranks).statistic))
            kendall.append(float(stats.kendalltau(scores, ranks).statistic))

    ties = sum(1 for c in pair_credit if c == 0.5)
    return RewardModelMetrics(
        pairwise_accuracy=_mean(pair_credit),
        exact_match=_mean(exact),
        five_best=five_best / five_total if five_total else None,
        best_scored_five=best_five_groups / best_groups if best_groups else None,
        spearman=_mean(spearman),
        kendall_tau=_mean(kendall),
        n_groups=len(groups),
        n_pairs=len(pair_credit),
        parse_rate=n_samples_parsed / len(samples) if samples else None,
        response_parse_rate=len(scored_all) / len(all_responses) if all_responses else None,
        model_tie_rate=ties / len(pair_credit) if pair_credit else None,
        n_perfect_five=five_total,
        n_groups_ranked=len(exact),
        n_groups_correlated=len(spearman),
        mean_score=_mean([r.score for r in scored_all]),
        score_histogram=score_histogram(r.score for r in scored_all),
        n_responses_too_long=sum(r.too_long for g in groups for r in g.responses),
    )


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None
