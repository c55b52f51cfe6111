"""Judge health: is the judge's verdict on this iteration fit to train on?

A self-rewarding iteration trains on whatever its own judge preferred, and the judge fails in known ways: it stops
writing a parsable `Score: N`, it collapses to one grade ("everything is a 5"), it cannot tell a prompt's candidates
apart (every candidate tied, so no pair), or it rewards length. Before DPO the gate measures each of these on the
iteration's committed judgments and pairs and compares it with a threshold of `judge_health` (srlm.config
JudgeHealthConfig):

- parse rate: share of judgments that parsed (srlm.evaluation.monitors.judgment_stats, as the monitors show it);
- score entropy: Shannon entropy in bits of the parsed scores' grade histogram (srlm.judging.scores bins: 0 bits
  when every judgment gives one grade, log2(6) = 2.58 when the six grades are equally common);
- share of 5s: share of parsed judgments that are a 5 (the monitors' five_rate);
- tie rate: share of prompts with at least two scored candidates whose candidates all have the same mean score;
  a candidate counts as scored with at least `judge.required_parsed_samples` parsed judgments, as in pair
  selection;
- length gap: (mean chosen chars − mean rejected chars) / mean rejected chars over the pairs; relative, so one
  threshold fits short and long answers; characters, because token counts may be missing (their absolute gap is
  reported too). No pairs: not measured.

Library code only (no Airflow); the step is srlm.steps.judge_health.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from srlm.config import JudgeHealthConfig
from srlm.formatting import format_number
from srlm.judging.scores import parsed_scores

# Means of a few small integers: equal means come out bit-identical, but stay safe against rounding (as pairs does).
_EPS = 1e-9


@dataclass(frozen=True)
class HealthCheck:
    """One metric against its threshold. value None: not measurable (e.g. no pairs), which passes."""

    metric: str  # key in the metrics dict
    label: str  # how the one-line error names it
    value: float | None
    threshold: float
    bound: str  # "min" or "max": the value must be at least / at most the threshold
    key: str  # the config key of the threshold

    @property
    def passed(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return True
        if self.bound == "min":
            return self.value >= self.threshold - _EPS
        return self.value <= self.threshold + _EPS

    def describe(self) -> str:
        """'share of 5s 1.00 above judge_health.max_share_of_fives 0.90'."""
        side = "below" if self.bound == "min" else "above"
        return f"{self.label} {_show(self.value)} {side} judge_health.{self.key} {_show(self.threshold)}"

    def status(self) -> str:
        """'1.00 (max 0.90) FAILED' for the step summary."""
        if self.value is None:
            return f"n/a: nothing to measure ({self.bound} {_show(self.threshold)})"
        return f"{_show(self.value)} ({self.bound} {_show(self.threshold)}) {'ok' if self.passed else 'FAILED'}"


def score_entropy(histogram: Mapping[str, int]) -> float | None:
    """Shannon entropy in bits of a grade histogram; None when it counts nothing."""
    total = sum(histogram.values())
    if not total:
        return None
    return max(0.0, -sum((n / total) * math.log2(n / total) for n in histogram.values() if n))


def tie_rate(judgments: pa.Table, required_parsed: int = 1) -> tuple[float | None, int, int]:
    """(tie rate, tied prompts, prompts with two or more scored candidates); the rate is None without any."""
    prompt_of = dict(zip(judgments.column("candidate_id").to_pylist(), judgments.column("prompt_id").to_pylist()))
    means: dict[str, list[float]] = defaultdict(list)
    for candidate_id, values in parsed_scores(judgments).items():
        if len(values) >= max(1, required_parsed):
            means[prompt_of[candidate_id]].append(sum(values) / len(values))
    contested = [m for m in means.values() if len(m) >= 2]
    tied = sum(1 for m in contested if max(m) - min(m) <= _EPS)
    return (tied / len(contested) if contested else None), tied, len(contested)


def health_metrics(judgments: pa.Table, pairs: pa.Table, *, required_parsed: int = 1) -> dict[str, Any]:
    """Every gate metric of one iteration, plus the counts behind them (JSON-ready)."""
    from srlm.evaluation.monitors import judgment_stats, pair_stats

    judged = judgment_stats(judgments)
    paired = pair_stats(pairs)
    rate, tied, contested = tie_rate(judgments, required_parsed)
    rejected_chars = [c if c is not None else len(r) for c, r in
                      zip(pairs.column("rejected_chars").to_pylist(), pairs.column("rejected").to_pylist())]
    mean_rejected = sum(rejected_chars) / len(rejected_chars) if rejected_chars else None
    gap = paired["mean_char_gap"]
    relative_gap = None
    if gap is not None and mean_rejected is not None:
        # Every rejected response empty: any longer chosen one is an unbounded gap, not an unmeasurable one.
        relative_gap = gap / mean_rejected if mean_rejected else (math.inf if gap > 0 else 0.0)
    return {
        "judgments": judged["n"],
        "parse_rate": judged["parse_rate"] if judged["n"] else None,
        "score_histogram": judged["histogram"],
        "score_entropy": score_entropy(judged["histogram"]),
        "share_of_fives": judged["five_rate"],
        "tie_rate": rate,
        "tied_prompts": tied,
        "contested_prompts": contested,
        "pairs": paired["n"],
        "length_gap": relative_gap,
        "mean_char_gap": gap,
        "mean_token_gap": paired["mean_token_gap"],
        "chosen_longer_rate": paired["chosen_longer_rate"],
    }


def health_checks(metrics: Mapping[str, Any], cfg: JudgeHealthConfig) -> list[HealthCheck]:
    """The gate's checks, most fundamental first (a judge that does not parse has no meaningful score spread)."""
    return [
        HealthCheck("parse_rate", "parse rate", metrics["parse_rate"], cfg.min_parse_rate, "min", "min_parse_rate"),
        HealthCheck("share_of_fives", "share of 5s", metrics["share_of_fives"], cfg.max_share_of_fives, "max",
                    "max_share_of_fives"),
        HealthCheck("score_entropy", "score entropy (bits)", metrics["score_entropy"], cfg.min_score_entropy, "min",
                    "min_score_entropy"),
        HealthCheck("tie_rate", "tie rate", metrics["tie_rate"], cfg.max_tie_rate, "max", "max_tie_rate"),
        HealthCheck("length_gap", "chosen-minus-rejected length gap", metrics["length_gap"], cfg.max_length_gap,
                    "max", "max_length_gap"),
    ]


@dataclass
class HealthReport:
    """What the gate found for one iteration: stored as health.json in the gate's artifact."""

    iteration: int
    enabled: bool
    metrics: dict[str, Any]
    checks: list[dict[str, Any]]
    failures: list[str]  # HealthCheck.describe() of each failed check
    override: dict[str, Any] | None = None  # who or what let the iteration continue past failures, and when

    @property
    def failed(self) -> bool:
        return self.enabled and bool(self.failures)

    @property
    def passed(self) -> bool:
        """Whether DPO may train: healthy, disabled, or failures accepted (override recorded)."""
        return not self.failed or self.override is not None

    def failure_line(self) -> str:
        """The one line a failed gate stops the iteration with (after 'srlm: error: ')."""
        return (
            f"judge health: {'; '.join(self.failures)} (iteration {self.iteration}); artifacts so far stay "
            "committed; pass --accept-judge-warnings to continue"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthReport:
        return cls(**{k: data[k] for k in ("iteration", "enabled", "metrics", "checks", "failures")},
                   override=data.get("override"))


def assess(iteration: int, metrics: Mapping[str, Any], cfg: JudgeHealthConfig) -> HealthReport:
    checks = health_checks(metrics, cfg)
    return HealthReport(
        iteration=iteration,
        enabled=cfg.enabled,
        metrics=dict(metrics),
        checks=[{**asdict(c), "passed": c.passed} for c in checks],
        failures=[c.describe() for c in checks if not c.passed],
    )


def check_rows(report: HealthReport) -> list[HealthCheck]:
    """The stored checks as HealthCheck objects again (for the summary)."""
    return [HealthCheck(**{k: v for k, v in row.items() if k != "passed"}) for row in report.checks]


def _show(value: float | None) -> str:
    return "n/a" if value is None else format_number(value, ".2f")
