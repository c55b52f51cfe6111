"""How srlm writes numbers for people: one place for the missing-value mark, percentages, durations and rates.

Every summary, report and CLI table formats through these, so "n/a" (or the report's "—"), "37.5%" and "1m 15s"
read the same everywhere. A value is missing when it is None or a float NaN (means of empty sets are NaN).
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "n/a"


def is_missing(value: Any) -> bool:
    """None or a float NaN: a metric that could not be computed."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_number(value: float | int | None, spec: str = ".2f", missing: str = MISSING) -> str:
    """`format(value, spec)`, or `missing` for None/NaN ('.3f' -> '0.123', ',.1f' -> '1,234.5')."""
    return missing if is_missing(value) else format(value, spec)


def format_percent(fraction: float | None, digits: int = 1, missing: str = MISSING) -> str:
    """A fraction as a percentage: 0.375 -> '37.5%' (digits=1), or `missing` for None/NaN."""
    return missing if is_missing(fraction) else f"{100 * fraction:.{digits}f}%"


def format_rate(numerator: int, denominator: int) -> str:
    """'50.0% (3/6)': a share with the counts it comes from; 'n/a (0 rows)' when there is nothing to divide."""
    if denominator == 0:
        return f"{MISSING} (0 rows)"
    return f"{100.0 * numerator / denominator:.1f}% ({numerator:,}/{denominator:,})"


def format_value(value: Any) -> str:
    """A metric for a summary row: yes/no, thousands separators, and about three significant digits for floats
    (1234.5 -> '1,234', 12.34 -> '12.3', 0.1234 -> '0.123'; trailing zeros dropped)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
        text = f"{value:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_duration(seconds: float) -> str:
    """Wall time: '42.0s' under a minute, then '1m 15s' and '2h 03m 04s'."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
