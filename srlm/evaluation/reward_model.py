"""How well a model judges: its additive 5-point scores against human rankings (Yuan et al., 2024, Table 4).

Every response of every human-ranked group (`eval_groups`, e.g. from `srlm data import --format oasst`) is
scored by the model with the judge template, K samples averaged, read with srlm.judging.parse like the `judge`
step. Definitions (human_rank 0 = best; equal ranks are human ties):

- A response's score: the mean of its K judge samples, as the paper averages K=3 (the loop's judge step does the
  same). A sample without a parsable "Score: N" is missing, not a score: a response has a score only when at least
  `min_parsed_samples` of its K samples parsed (default all K, as judge.min_parsed_samples defaults in the loop,
  where a candidate short of it does not compete), and the score is then the mean of the parsed ones.
- pairwise_accuracy (the headline): over pairs of scored responses in a group that humans ordered (different
  ranks), the fraction the model orders the same way. Only agreement counts, as in the paper: a model tie (equal
  scores) is not agreement. `model_tie_rate` says how often that happened; pairwise_accuracy_tie_half is the
  same with a model tie credited 0.5 (the expected accuracy of breaking it at random), for comparison.
- exact_match: fraction of groups whose model ordering equals the human ordering on every pair (ties must
  match ties).
- five_best: the paper's "5-best %": of the responses the model scores a perfect 5, the fraction that humans
  ranked best in their group. A perfect 5 is a mean of 5 over all K samples: every sample parsed and 5, so
  [5, unparsed, unparsed] is not one (whatever min_parsed_samples is). `best_scored_five` is the converse: the
  fraction of groups whose human-best response got a perfect 5.
- spearman / kendall_tau: scipy.stats.spearmanr / kendalltau (tau-b, ties handled by scipy) between model score
  and human preference (-rank), per group, averaged over groups. A group whose model scores are all equal carries
  no ranking and counts as 0 (scipy gives nan; leaving it out would hide a judge that scores everything alike);
  a group whose human ranks are all equal is left out of the correlations.
- Unscored responses: a judged response short of min_parsed_samples parsed judgments has no score. It is left
  out of every pair and group statistic (a group keeps its scored responses; with fewer than two it drops out of
  the group statistics). parse_rate = parsed judgments / all judgments; response_parse_rate = scored responses /
  judged responses; n_responses_partly_parsed counts the unscored ones that had some parsed judgment.
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
from srlm.judging.parse import MAX_SCORE
from srlm.judging.rubric import RubricSampling, mean_score, score_responses
from srlm.judging.scores import score_histogram

# The definitions above, versioned: part of a recorded result's producer settings, so results committed under an
# earlier definition (2: strict pairwise accuracy, scores need min_parsed_samples, a perfect 5 is all K samples)
# are recomputed rather than reused.
METRICS_VERSION = 2


@dataclass
class RankedResponse:
    response_id: str
    response: str
    human_rank: int
    scores: list[float | None] = field(default_factory=list)  # one per judge sample; None = unparsed
    too_long: bool = False  # its judge prompt does not fit the judge's context, so it was not judged

    def score(self, min_parsed_samples: int | None = None) -> float | None:
        """Mean of the parsed judge samples, or None when fewer than `min_parsed_samples` of them parsed (None:
        all; more than were sampled: all)."""
        required = len(self.scores) if min_parsed_samples is None else min(min_parsed_samples, len(self.scores))
        return mean_score(self.scores, required)

    @property
    def perfect_five(self) -> bool:
        """Whether the mean over all K samples is a 5: every sample parsed and scored 5."""
        return bool(self.scores) and all(s is not None and s >= MAX_SCORE for s in self.scores)


@dataclass
class RankedGroup:
    group_id: str
    prompt_messages: list[dict[str, str]]
    responses: list[RankedResponse]


@dataclass
class RewardModelMetrics:
    pairwise_accuracy: float | None  # strict: a model tie is not agreement
    pairwise_accuracy_tie_half: float | None  # a model tie counts 0.5
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
    n_responses_partly_parsed: int = 0  # judged, some judgments parsed, fewer than min_parsed_samples: no score
    min_parsed_samples: int | None = None  # None: all K

    def to_dict(self) -> dict:
        return asdict(self)

    def headline(self) -> dict[str, float | None]:
        """The metrics that go into eval_results, as (name -> value)."""
        return {
            "pairwise_accuracy": self.pairwise_accuracy,
            "pairwise_accuracy_tie_half": self.pairwise_accuracy_tie_half,
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

    def _required_text(self) -> str:
        required = "all K" if self.min_parsed_samples is None else f"≥{self.min_parsed_samples}"
        return f"{required} judgments parsed; {self.n_responses_partly_parsed} partly parsed left out"

    def to_text(self) -> str:
        pct = format_percent

        def num(v: float | None) -> str:
            return format_number(v, ".3f")

        hist = " ".join(f"{k}:{v}" for k, v in self.score_histogram.items())
        return "\n".join(
            [
                f"reward-model metrics over {self.n_groups} groups ({self.n_groups_ranked} with ≥2 scored responses), "
                f"{self.n_pairs} human-ordered pairs",
                f"  pairwise accuracy  {pct(self.pairwise_accuracy)}  (strict; model ties {pct(self.model_tie_rate)}, "
                f"{pct(self.pairwise_accuracy_tie_half)} with a tie counted 0.5)",
                f"  exact match        {pct(self.exact_match)}",
                f"  5-best             {pct(self.five_best)}  ({self.n_perfect_five} responses scored a perfect 5)",
                f"  best scored 5      {pct(self.best_scored_five)}",
                f"  spearman           {num(self.spearman)}",
                f"  kendall tau        {num(self.kendall_tau)}",
                f"  parse rate         {pct(self.parse_rate)} of judgments, {pct(self.response_parse_rate)} of responses "
                f"scored ({self._required_text()})",
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


def score_groups(groups: Sequence[RankedGroup], backend, sampling: RubricSampling) -> list[RankedGroup]:
    """Fill every response's `scores` with K judge samples from `backend` (in place; returns `groups`). Responses
    whose judge prompt does not fit the backend's context are marked `too_long` and not judged."""
    responses = [(g, r) for g in groups for r in g.responses]
    judged = score_responses(backend, [(judge_instruction(g.prompt_messages), r.response) for g, r in responses], sampling)
    for (_, response), judgments in zip(responses, judged, strict=True):
        response.too_long = judgments is None
        if judgments is not None:
            response.scores = [j.score for j in judgments]
    return list(groups)


def reward_model_metrics(groups: Sequence[RankedGroup], *, min_parsed_samples: int | None = None) -> RewardModelMetrics:
    """All metrics of scored groups (see the module docstring for the definitions); `min_parsed_samples` is the
    parsed judgments a response needs for a score (None: all K)."""
    from scipy import stats

    if min_parsed_samples is not None and min_parsed_samples < 1:
        raise DataError(f"judge.min_parsed_samples: must be at least 1, got {min_parsed_samples}")
    samples = [s for g in groups for r in g.responses for s in r.scores]
    n_samples_parsed = sum(1 for s in samples if s is not None)
    judged = [r for g in groups for r in g.responses if not r.too_long]
    score = {id(r): r.score(min_parsed_samples) for g in groups for r in g.responses}
    scored_all = [r for r in judged if score[id(r)] is not None]
    partly_parsed = [r for r in judged if score[id(r)] is None and any(s is not None for s in r.scores)]

    agreements: list[bool] = []  # one per human-ordered pair of scored responses
    model_ties = 0
    exact: list[bool] = []
    spearman: list[float] = []
    kendall: list[float] = []
    five_total = five_best = 0
    best_groups = best_five_groups = 0
    for group in groups:
        for r in group.responses:
            if r.perfect_five:
                five_total += 1
                five_best += r.human_rank == 0
        best = [r for r in group.responses if r.human_rank == 0 and not r.too_long and r.scores]
        if best:
            best_groups += 1
            best_five_groups += any(r.perfect_five for r in best)
        scored = [r for r in group.responses if score[id(r)] is not None]
        if len(scored) < 2:
            continue
        all_match = True
        for i in range(len(scored)):
            for j in range(i + 1, len(scored)):
                a, b = scored[i], scored[j]
                human = np.sign(b.human_rank - a.human_rank)  # +1: humans prefer a
                model = np.sign(score[id(a)] - score[id(b)])
                all_match &= bool(human == model)
                if human != 0:
                    agreements.append(bool(model == human))
                    model_ties += model == 0
        exact.append(all_match)
        ranks = np.array([-r.human_rank for r in scored], dtype=float)
        scores = np.array([score[id(r)] for r in scored], dtype=float)
        if np.ptp(ranks) == 0:
            continue
        if np.ptp(scores) == 0:
            spearman.append(0.0)
            kendall.append(0.0)
        else:
            spearman.append(float(stats.spearmanr(scores, ranks).statistic))
            kendall.append(float(stats.kendalltau(scores, ranks).statistic))

    n_pairs = len(agreements)
    return RewardModelMetrics(
        pairwise_accuracy=_mean(agreements),
        pairwise_accuracy_tie_half=(sum(agreements) + 0.5 * model_ties) / n_pairs if n_pairs else None,
        exact_match=_mean(exact),
        five_best=five_best / five_total if five_total else None,
        best_scored_five=best_five_groups / best_groups if best_groups else None,
        spearman=_mean(spearman),
        kendall_tau=_mean(kendall),
        n_groups=len(groups),
        n_pairs=n_pairs,
        parse_rate=n_samples_parsed / len(samples) if samples else None,
        response_parse_rate=len(scored_all) / len(judged) if judged else None,
        model_tie_rate=model_ties / n_pairs if n_pairs else None,
        n_perfect_five=five_total,
        n_groups_ranked=len(exact),
        n_groups_correlated=len(spearman),
        mean_score=_mean([score[id(r)] for r in scored_all]),
        score_histogram=score_histogram(score[id(r)] for r in scored_all),
        n_responses_too_long=sum(r.too_long for g in groups for r in g.responses),
        n_responses_partly_parsed=len(partly_parsed),
        min_parsed_samples=min_parsed_samples,
    )


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None
