"""Meta-Rewarding (Wu et al., 2024, arXiv 2407.19594): the model judges its own judgments.

Everything here is a pure function; srlm.steps.meta_judge runs the model and stores the tables.

- Response selection: per prompt, the meta-judge looks at the response whose judgments disagree most (the highest
  variance of their parsed scores), comparing its parsed judgments with each other.
- Battles: every pair of those judgments is shown to the meta-judge in both orders (A/B and B/A). A win in the
  position the meta-judge favours overall counts for less: with win_1st and win_2nd the wins of the first and the
  second position over all the iteration's meta-judgments, a first-position win weighs
  w1 = win_2nd / (win_1st + win_2nd) and a second-position win w2 = win_1st / (win_1st + win_2nd).
- Scores: the weighted battle matrix B (B[m][n]: weighted wins of judgment m over n) is turned into one rating per
  judgment by the Bradley–Terry maximum-likelihood fit the paper calls an Elo score,
  argmax_e sum_mn B[m][n] · log sigmoid(e_m − e_n), reported on the Elo scale (1000 + 400·e/ln 10).
- Judgment pairs: the highest-rated judgment is chosen, the lowest-rated rejected; equal ratings are a tie.
- Actor pairs (length control): the chosen response is the shortest one scoring at least
  (1 − ρ)·S_max + ρ·S_min, the rejected one the lowest-scored; ρ = 0 is plain best-vs-worst.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations
from typing import Literal, Protocol, TypeVar

from srlm.judging.template import load_prompt_template

PLACEHOLDERS = ("{instruction}", "{response}", "{judgment_a}", "{judgment_b}")
_PLACEHOLDER = re.compile(r"\{(instruction|response|judgment_a|judgment_b)\}")
ELO_BASE = 1000.0
ELO_SCALE = 400.0 / math.log(10.0)  # logit units → Elo points
# A weak Gaussian prior on the strengths (a ridge penalty prior/2·Σe²): without it, a judgment that wins every battle
# has an infinitely high maximum-likelihood rating (the fit has no maximum). It does not reorder judgments the data
# separate, and it centres the ratings (they sum to zero in logit units).
PRIOR = 0.01
_EPS = 1e-9
# Ratings closer than this (Elo points) are a tie: no judgment pair.
RATING_TIE = 1e-6

Winner = Literal["A", "B"]


# ── the meta-judge prompt ──────────────────────────────────────────────────────────────────────────────────────
@lru_cache(maxsize=16)
def load_meta_template(name_or_path: str = "meta_judge") -> str:
    """A shipped meta-judge template by name, or a template file by path, with all four PLACEHOLDERS."""
    return load_prompt_template(
        name_or_path, package="srlm.judging", placeholders=PLACEHOLDERS, what="meta_rewarding.template"
    )


def render_meta_prompt(template: str, instruction: str, response: str, judgment_a: str, judgment_b: str) -> str:
    """Fill the template in one pass over the template only: text put in (which routinely holds braces, or even a
    literal '{judgment_b}') is never searched for placeholders again."""
    values = {"instruction": instruction, "response": response, "judgment_a": judgment_a, "judgment_b": judgment_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ── the meta-judge's verdict ───────────────────────────────────────────────────────────────────────────────────
# "Winner: Judgment A", "**Winner:** [Judgement B]", "Winner = B". The bare letter must be a capital standing alone,
# so "Winner: a tie" or "Winner: Both" is no verdict.
_WINNER = re.compile(
    r"(?i:winner)\W{0,3}\s*[:=]\s*\**\s*\[?\s*(?:(?i:the\s+)?(?i:judge?ments?)\s*(?P<named>[ABab])|(?P<bare>[AB]))(?!\w)"
)


@dataclass(frozen=True)
class MetaVerdict:
    winner: Winner | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.winner is not None


def parse_meta_verdict(text: str) -> MetaVerdict:
    """The meta-judge's final 'Winner: Judgment A|B' (the last one counts, as for scores); otherwise why not."""
    matches = list(_WINNER.finditer(text or ""))
    if not matches:
        return MetaVerdict(None, "no 'Winner: Judgment A|B' in meta-judgment")
    last = matches[-1]
    rest = text[last.end() :].split("\n", 1)[0]
    if re.match(r"\s*\]?\s*[|/]|\s+(?i:or)\s", rest):  # "Winner: [Judgement A | Judgement B]": the format, copied
        return MetaVerdict(None, "the verdict names both judgments")
    letter = (last.group("named") or last.group("bare")).upper()
    return MetaVerdict("A" if letter == "A" else "B", None)


# ── which response's judgments battle ──────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class JudgmentSample:
    sample_index: int
    text: str
    score: float


@dataclass(frozen=True)
class JudgedResponse:
    prompt_id: str
    prompt: str
    candidate_id: str
    candidate_index: int
    response: str
    judgments: tuple[JudgmentSample, ...]  # parsed ones only, by sample_index

    @property
    def score_variance(self) -> float:
        scores = [j.score for j in self.judgments]
        centre = sum(scores) / len(scores)
        return sum((s - centre) ** 2 for s in scores) / len(scores)


def response_to_meta_judge(
    responses: Sequence[JudgedResponse], max_judgments: int | None = None
) -> JudgedResponse | None:
    """The response whose parsed judgments vary most (the paper's choice: its judge is least sure of it), keeping its
    first `max_judgments`; None when no response has two parsed judgments. Equal variances: the lowest
    candidate_index, so reruns pick the same one."""
    contested = [r for r in responses if len(r.judgments) >= 2]
    if not contested:
        return None
    best = min(contested, key=lambda r: (-r.score_variance, r.candidate_index))
    if max_judgments is not None and len(best.judgments) > max_judgments:
        best = JudgedResponse(
            best.prompt_id,
            best.prompt,
            best.candidate_id,
            best.candidate_index,
            best.response,
            best.judgments[:max_judgments],
        )
    return best


def battle_plan(count: int) -> list[tuple[int, int]]:
    """Every ordered pair (shown first, shown second) of `count` judgments: each pair meets in both orders."""
    return list(permutations(range(count), 2))


# ── battles → ratings ──────────────────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Battle:
    """One meta-judgment: judgment `first` shown as A, `second` as B; winner is "A", "B" or None (unparsed)."""

    first: int
    second: int
    winner: Winner | None


def position_weights(battles: Sequence[Battle]) -> tuple[float, float]:
    """(w1, w2): what a win in the first and in the second position counts. Each is the *other* position's share
    of the decisive verdicts, so a meta-judge that favours one position gets that position's wins discounted; an
    unbiased one weighs both 0.5. No decisive verdict at all: (0.5, 0.5)."""
    first = sum(1 for b in battles if b.winner == "A")
    second = sum(1 for b in battles if b.winner == "B")
    total = first + second
    if total == 0:
        return 0.5, 0.5
    return second / total, first / total


def battle_matrix(count: int, battles: Sequence[Battle], weights: tuple[float, float]) -> list[list[float]]:
    """B[m][n]: the weighted wins of judgment m over judgment n (unparsed verdicts count for nobody)."""
    w1, w2 = weights
    matrix = [[0.0] * count for _ in range(count)]
    for b in battles:
        if b.winner == "A":
            matrix[b.first][b.second] += w1
        elif b.winner == "B":
            matrix[b.second][b.first] += w2
    return matrix


def elo_ratings(matrix: Sequence[Sequence[float]], *, prior: float = PRIOR, iterations: int = 100) -> list[float]:
    """Bradley–Terry maximum-likelihood strengths of the battle matrix (with a weak prior, see PRIOR) on the Elo
    scale, centred on ELO_BASE. Newton's method with a backtracking line search on the concave objective: a few
    steps for the handful of judgments a response has."""
    n = len(matrix)
    strength = [0.0] * n
    if n == 0:
        return []
    for _ in range(iterations):
        gradient = [-prior * s for s in strength]
        curvature = [[prior if m == k else 0.0 for k in range(n)] for m in range(n)]  # −Hessian
        for m in range(n):
            for k in range(m + 1, n):
                games = matrix[m][k] + matrix[k][m]
                if games == 0:
                    continue
                p = _sigmoid(strength[m] - strength[k])  # P(m beats k)
                g = matrix[m][k] * (1.0 - p) - matrix[k][m] * p
                gradient[m] += g
                gradient[k] -= g
                w = games * p * (1.0 - p)
                curvature[m][m] += w
                curvature[k][k] += w
                curvature[m][k] -= w
                curvature[k][m] -= w
        if max(abs(g) for g in gradient) < 1e-9:
            break
        direction = _solve(curvature, gradient)
        slope = sum(g * d for g, d in zip(gradient, direction, strict=True))
        before, step = _log_likelihood(matrix, strength, prior), 1.0
        while step > 1e-10:
            trial = [s + step * d for s, d in zip(strength, direction, strict=True)]
            if _log_likelihood(matrix, trial, prior) >= before + 1e-4 * step * slope:
                break
            step /= 2
        strength = trial
    return [ELO_BASE + ELO_SCALE * s for s in strength]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _log_likelihood(matrix: Sequence[Sequence[float]], strength: Sequence[float], prior: float) -> float:
    n = len(strength)
    total = -0.5 * prior * sum(s * s for s in strength)
    for m in range(n):
        for k in range(n):
            if m != k and matrix[m][k]:
                total += matrix[m][k] * _log_sigmoid(strength[m] - strength[k])
    return total


def _solve(a: Sequence[Sequence[float]], b: Sequence[float]) -> list[float]:
    """x with a·x = b, a symmetric positive definite (Gaussian elimination; n is a handful)."""
    n = len(b)
    rows = [list(a[i]) + [b[i]] for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, n):
            factor = rows[r][col] / rows[col][col]
            for c in range(col, n + 1):
                rows[r][c] -= factor * rows[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (rows[r][n] - sum(rows[r][c] * x[c] for c in range(r + 1, n))) / rows[r][r]
    return x


def judgment_pair(ratings: Sequence[float]) -> tuple[int, int] | None:
    """(chosen, rejected): the highest- and the lowest-rated judgment; None when all ratings tie. Equal ratings
    at the top or bottom: the lowest index."""
    if len(ratings) < 2:
        return None
    best = min(range(len(ratings)), key=lambda i: (-ratings[i], i))
    worst = min(range(len(ratings)), key=lambda i: (ratings[i], i))
    if ratings[best] - ratings[worst] <= RATING_TIE:
        return None
    return best, worst


# ── actor pairs with length control ────────────────────────────────────────────────────────────────────────────
class ScoredResponse(Protocol):
    """What length control needs of a candidate (srlm.steps.pairs.ScoredCandidate has it)."""

    @property
    def mean_score(self) -> float: ...
    @property
    def response(self) -> str: ...
    @property
    def candidate_index(self) -> int: ...


C = TypeVar("C", bound=ScoredResponse)


def length_controlled_chosen(choosable: Sequence[C], rho: float, *, bottom: float | None = None) -> C:
    """The chosen side of Meta-Rewarding's length control: the shortest (in characters) of `choosable` scoring at
    least (1 − rho)·S_max + rho·S_min, S_max the top score among them and S_min `bottom` (the prompt's lowest score;
    default: the lowest among them). Equal lengths: the higher score, then the lowest candidate_index."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"length control: rho must be in [0, 1], got {rho}")
    top = max(c.mean_score for c in choosable)
    low = min(c.mean_score for c in choosable) if bottom is None else bottom
    threshold = (1.0 - rho) * top + rho * low
    band = [c for c in choosable if c.mean_score >= threshold - _EPS]
    return min(band, key=lambda c: (len(c.response), -c.mean_score, c.candidate_index))


def length_controlled_pair(candidates: Sequence[C], rho: float) -> tuple[C, C] | None:
    """Meta-Rewarding's actor pair: chosen = length_controlled_chosen, rejected = the lowest-scored other candidate;
    None when fewer than two candidates or the pair would tie. Equal scores: the lowest candidate_index."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"length control: rho must be in [0, 1], got {rho}")
    if len(candidates) < 2:
        return None
    chosen = length_controlled_chosen(candidates, rho)
    rejected = min((c for c in candidates if c is not chosen), key=lambda c: (c.mean_score, c.candidate_index))
    if chosen.mean_score - rejected.mean_score <= _EPS:
        return None
    return chosen, rejected
