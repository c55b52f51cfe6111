"""The distribution of judge scores: one binning rule for step summaries, monitors, reward-model metrics and the
report.

The judge grades on the paper's additive 0–5 scale, and what srlm stores and compares is usually the *mean* of
several judgments (3 samples per candidate, so 4.67 for 5, 5, 4). A score goes to the bin of the grade nearest to
it, rounding halves up: 3.67 → 4, 2.49 → 2, 1.5 → 2, 5 → 5. Nearest-grade binning (rather than flooring each
score into [k, k+1)) is chosen because

- the bin label then reads as a grade on the judge's scale: a candidate the judge gave 5, 5, 4 is "about a 5",
  and the all-5 collapse the monitors watch for shows up in bin 5 instead of hiding in bin 4;
- it is unbiased: flooring shifts every averaged score down by a third of a point on average, so the histogram
  would disagree with the mean score printed beside it;
- bins 1–4 are equally wide (a half point either side), and a judge that wrote "Score: 3.5" lands where
  `round-half-up` puts it, never at the mercy of Python's round-half-to-even (round(2.5) == 2).

Keys are the grades as strings ("0" … "5"), every bin present: the histograms are stored in JSON (summary.json,
monitor and metric payloads), whose keys are strings, so the in-memory and the stored form are the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

MIN_SCORE = 0
MAX_SCORE = 5
SCORE_BINS = tuple(str(grade) for grade in range(MIN_SCORE, MAX_SCORE + 1))


def score_bin(score: float) -> str:
    """The grade bin of one score: the nearest grade, halves up, clamped to 0–5 (3.67 → "4", 7 → "5")."""
    return str(int(min(MAX_SCORE, max(MIN_SCORE, math.floor(score + 0.5)))))


def score_histogram(scores: Iterable[float | None]) -> dict[str, int]:
    """Counts per grade bin "0"…"5" (all present, in order); None and NaN (unparsed judgments) are not counted."""
    counts = dict.fromkeys(SCORE_BINS, 0)
    for score in scores:
        if score is None or (isinstance(score, float) and math.isnan(score)):
            continue
        counts[score_bin(score)] += 1
    return counts


def parsed_scores(judgments: pa.Table) -> dict[str, list[float]]:
    """Each judged candidate's parsed scores, in judgment order, from a judgments table: an unparsed judgment adds
    nothing, so a candidate none of whose judgments parsed maps to []. Pair selection and the judge-health tie rate
    read candidates' scores (and the means and counts over them) from here."""
    scores: dict[str, list[float]] = {}
    for candidate_id, score, ok in zip(
        judgments.column("candidate_id").to_pylist(),
        judgments.column("score").to_pylist(),
        judgments.column("parse_ok").to_pylist(),
    ):
        values = scores.setdefault(candidate_id, [])
        if ok and score is not None:
            values.append(float(score))
    return scores

