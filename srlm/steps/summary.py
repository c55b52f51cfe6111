"""The one-screen summary every step prints and stores beside its artifacts (summary.json + summary.txt).

Numbers are written by srlm.formatting and score histograms binned by srlm.judging.scores (their one homes), so a
summary reads like the report and the monitors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from srlm.formatting import format_duration, format_value

BAR_WIDTH = 30
LABEL_WIDTH = 20


@dataclass
class StepSummary:
    """What one step did. `metrics` is machine-readable (JSON); `lines` are the human-readable rows."""

    step: str
    iteration: int
    output_uri: str
    wall_seconds: float = 0.0
    reused: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    histograms: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, key: str, value: Any, label: str | None = None, text: str | None = None) -> None:
        """Record a metric under `key` and show it as `label  text` (defaults: the key and a formatted value)."""
        self.metrics[key] = value
        self.lines.append((label or key.replace("_", " "), text if text is not None else format_value(value)))

    def add_histogram(self, key: str, counts: Mapping[str, int], label: str | None = None) -> None:
        self.histograms[key] = dict(counts)
        self.lines.append((label or key.replace("_", " "), "\n".join(histogram_lines(counts))))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("lines")
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def render(self) -> str:
        where = f"iteration {self.iteration}" if self.iteration else "seed"
        title = f"── {self.step} · {where} " + ("(reused) " if self.reused else "")
        rows = [title + "─" * max(0, 72 - len(title))]
        rows.append(_row("output", self.output_uri))
        for label, text in self.lines:
            rows.append(_row(label, text))
        rows.append(_row("wall time", format_duration(self.wall_seconds)))
        rows.extend(f"  ! {note}" for note in self.notes)
        return "\n".join(rows)


def _row(label: str, text: str) -> str:
    first, *rest = str(text).split("\n") or [""]
    out = [f"  {label:<{LABEL_WIDTH}} {first}"]
    out.extend(f"  {'':<{LABEL_WIDTH}} {line}" for line in rest)
    return "\n".join(out)


def histogram_lines(counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return ["(empty)"]
    peak = max(counts.values()) or 1
    width = max(len(str(k)) for k in counts)
    return [f"{str(k):>{width}} {'█' * max(1 if v else 0, round(BAR_WIDTH * v / peak)):<{BAR_WIDTH}} {v:,}" for k, v in counts.items()]


def mean(values: Iterable[float | int | None]) -> float:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")
