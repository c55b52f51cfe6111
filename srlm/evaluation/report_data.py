"""What `srlm report` shows, gathered from a run: per-checkpoint results, per-iteration monitors, chart series.

Sources: the run's eval_results (reward-model metrics, win rates, head-to-head) and the monitors computed from
its iteration artifacts. Everything here is plain data (numbers for the charts, formatted strings for the
tables); srlm.evaluation.report_charts draws it and srlm.evaluation.report renders it through the templates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from srlm.evaluation.monitors import MonitorReport, MonitorThresholds, compute_monitors
from srlm.evaluation.results import read_run_results, results_by_checkpoint
from srlm.formatting import format_number, format_percent
from srlm.store.layout import RunLayout

RM_METRICS = ("pairwise_accuracy", "exact_match", "five_best", "spearman", "kendall_tau", "parse_rate")
MISSING = "—"  # the report's mark for a value that does not exist (yet)


@dataclass
class ReportData:
    run: str
    generated_at: str
    checkpoints: list[str]
    results: dict[str, dict[str, dict[str, float | None]]]
    monitors: MonitorReport

    def to_dict(self) -> dict:
        """report.json: the gathered data as plain JSON values."""
        return {"run": self.run, "generated_at": self.generated_at, "checkpoints": self.checkpoints,
                "results": self.results, "monitors": self.monitors.to_dict()}

    def suite(self, checkpoint: str, suite: str) -> dict[str, float | None]:
        """One checkpoint's committed metrics of `suite` ({} when there are none)."""
        return self.results.get(checkpoint, {}).get(suite, {})


def gather(layout: RunLayout, thresholds: MonitorThresholds | None = None) -> ReportData:
    results = results_by_checkpoint(read_run_results(layout))
    monitors = compute_monitors(layout, thresholds)
    checkpoints = set(results) | {w["checkpoint"] for w in monitors.winrates}
    try:
        from srlm.training.registry import list_records

        checkpoints |= {r.checkpoint_id for r in list_records(layout)}
    except ImportError:  # registry not available: the results and annotations name the checkpoints
        pass
    return ReportData(
        run=layout.run_uri,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        checkpoints=sorted(checkpoints, key=_natural_key),
        results=results,
        monitors=monitors,
    )


# ------------------------------------------------------------------------------------------------------ series


def win_rates(data: ReportData) -> dict[str, tuple[float | None, float | None]]:
    """checkpoint -> (raw, length-controlled) win rate: its recorded winrate result, else the first annotations
    stored with the run for it (what the monitors computed)."""
    stored: dict[str, dict] = {}
    for w in data.monitors.winrates:
        stored.setdefault(w["checkpoint"], w)
    out = {}
    for ckpt in data.checkpoints:
        recorded, annotations = data.suite(ckpt, "winrate"), stored.get(ckpt, {})
        out[ckpt] = (
            recorded.get("win_rate", annotations.get("win_rate")),
            recorded.get("length_controlled_winrate", annotations.get("length_controlled_winrate")),
        )
    return out


@dataclass
class WinRateSeries:
    """Checkpoints with any win rate or head-to-head result, and their values (None: not measured)."""

    checkpoints: list[str]
    raw: list[float | None]
    length_controlled: list[float | None]
    head2head: list[tuple[float | None, float | None, float | None] | None]  # A wins / tie / B wins %


def win_rate_series(data: ReportData) -> WinRateSeries:
    series = WinRateSeries([], [], [], [])
    for ckpt, (raw, lc) in win_rates(data).items():
        h2h = data.suite(ckpt, "head2head")
        if raw is None and lc is None and not h2h:
            continue
        series.checkpoints.append(ckpt)
        series.raw.append(raw)
        series.length_controlled.append(lc)
        series.head2head.append((h2h.get("a_win_pct"), h2h.get("tie_pct"), h2h.get("b_win_pct")) if h2h else None)
    return series


def reward_model_series(data: ReportData) -> tuple[list[str], dict[str, list[float | None]]]:
    """Checkpoints with reward-model results, and each RM_METRICS metric's values over them (metrics with no
    value at all are left out)."""
    ckpts = [c for c in data.checkpoints if data.suite(c, "reward_model")]
    metrics = {m: [data.suite(c, "reward_model").get(m) for c in ckpts] for m in RM_METRICS}
    return ckpts, {m: values for m, values in metrics.items() if any(v is not None for v in values)}


def iteration_label(iteration: int, model: str) -> str:
    return f"it{iteration}\n({model})"


# ------------------------------------------------------------------------------------------------------ tables


def checkpoint_rows(data: ReportData) -> list[dict[str, str]]:
    rows = []
    rates = win_rates(data)
    for ckpt in data.checkpoints:
        h2h, rm = data.suite(ckpt, "head2head"), data.suite(ckpt, "reward_model")
        raw, lc = rates[ckpt]
        rows.append(
            {
                "checkpoint": ckpt,
                "head-to-head A / tie / B": (
                    " / ".join(_f(h2h.get(k), ".1f") for k in ("a_win_pct", "tie_pct", "b_win_pct")) if h2h else MISSING
                ),
                "win rate": _f(raw, ".1f"),
                "LC win rate": _f(lc, ".1f"),
                "pairwise acc.": _pct(rm.get("pairwise_accuracy")),
                "exact match": _pct(rm.get("exact_match")),
                "5-best": _pct(rm.get("five_best")),
                "spearman": _f(rm.get("spearman"), ".3f"),
                "kendall τ": _f(rm.get("kendall_tau"), ".3f"),
                "judge parse": _pct(rm.get("parse_rate")),
            }
        )
    return rows


def iteration_rows(data: ReportData) -> list[dict[str, str]]:
    rows = []
    for it in data.monitors.iterations:
        c, j, p = it.candidates or {}, it.judgments or {}, it.pairs or {}
        rows.append(
            {
                "iteration": str(it.iteration),
                "model": it.model,
                "mean tokens": _f(c.get("mean_tokens"), ".1f"),
                "mean chars": _f(c.get("mean_chars"), ".0f"),
                "hit max tokens": _pct(c.get("truncated_rate")),
                "judge parse": _pct(j.get("parse_rate")),
                "scored 5": _pct(j.get("five_rate")),
                "mean score": _f(j.get("mean_score"), ".2f"),
                "pairs": str(p.get("n", MISSING)),
                "chosen longer": _pct(p.get("chosen_longer_rate")),
                "length gap (chars)": _f(p.get("mean_char_gap"), "+.0f"),
            }
        )
    return rows


def _f(value: float | None, spec: str) -> str:
    return format_number(value, spec, missing=MISSING)


def _pct(value: float | None) -> str:
    return format_percent(value, missing=MISSING)


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
