"""Read the judge's score out of its own judgment text.

Only the judge's output is parsed, never the prompt it saw, so a response under review that contains
"Score: 5" cannot score itself. Within the judgment the *last* `Score: N` counts: the rubric tells the judge to
conclude with it, and a judge that quotes the response earlier in its justification must not be scored by that
quote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "Score: 4", "score: 3.5", "**Score:** 4/5", "Score = 2" — integer or fractional, optionally "/5".
_SCORE = re.compile(r"score\s*\**\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*5(?:\.0+)?)?", re.IGNORECASE)

MIN_SCORE = 0.0
MAX_SCORE = 5.0


@dataclass(frozen=True)
class ParsedScore:
    score: float | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.score is not None


def parse_score(judgment: str) -> ParsedScore:
    """The final `Score: N` of a judgment, with N in [0, 5]; otherwise a reason why not."""
    matches = list(_SCORE.finditer(judgment or ""))
    if not matches:
        return ParsedScore(None, "no 'Score: N' in judgment")
    value = float(matches[-1].group(1))
    if not MIN_SCORE <= value <= MAX_SCORE:
        return ParsedScore(None, f"score {value:g} outside [0, 5]")
    return ParsedScore(value, None)
