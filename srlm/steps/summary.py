"""The one-screen summary every step prints and stores beside its artifacts (summary.json + summary.txt)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

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


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
        text = f"{value:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_rate(numerator: int, denominator: int) -> str:
    if denominator == 0:
        return "n/a (0 rows)"
    return f"{100.0 * numerator / denominator:.1f}% ({numerator:,}/{denominator:,})"


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def histogram_lines(counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return ["(empty)"]
    peak = max(counts.values()) or 1
    width = max(len(str(k)) for k in counts)
    return [f"{str(k):>{width}} {'█' * max(1 if v else 0, round(BAR_WIDTH * v / peak)):<{BAR_WIDTH}} {v:,}" for k, v in counts.items()]


def score_histogram(scores: Iterable[float], bins: Iterable[float] = (0, 1, 2, 3, 4, 5)) -> dict[str, int]:
    """Counts per integer score; fractional scores (from averaging or a judge writing 3.5) go to their floor bin."""
    labels = [str(int(b)) for b in bins]
    counts = {label: 0 for label in labels}
    for score in scores:
        if score is None or (isinstance(score, float) and math.isnan(score)):
            continue
        label = str(int(min(max(math.floor(score), 0), 5)))
        counts[label] = counts.get(label, 0) + 1
    return counts


def mean(values: Iterable[float | int | None]) -> float:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")
