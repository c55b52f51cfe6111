"""Read the judge's score out of its own judgment text.

Only the judge's output is parsed, never the prompt it saw, so a response under review that contains
"Score: 5" cannot score itself. Within the judgment the *last* `Score: N` counts: the rubric tells the judge to
conclude with it, and a judge that quotes the response earlier in its justification must not be scored by that
quote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "Score: 4", "score: 3.5", "**Score:** 4/5", "Score = 2" — integer or fractional, optionally "/5". "score" must be a
# word of its own ("subscore: 3" is not a score).
_SCORE = re.compile(r"\bscore\s*\**\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*5(?:\.0+)?)?", re.IGNORECASE)
# The word right before "score" on its line (markdown emphasis and spaces skipped), if any.
_WORD_BEFORE = re.compile(r"(\w+)[\s*_#]*$")
# "Final score: 4", "Total Score: 3", "I give it a score: 4": the rubric's own total, named or with an article. Any
# other word before "score" names some other score ("F1 score: 0.9", "quality score = 2") mentioned along the way.
_TOTAL_WORDS = frozenset({"final", "total", "overall", "a", "the", "my", "its", "this"})

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
    text = judgment or ""
    matches = [m for m in _SCORE.finditer(text) if _is_rubric_score(text, m.start())]
    if not matches:
        return ParsedScore(None, "no 'Score: N' in judgment")
    value = float(matches[-1].group(1))
    if not MIN_SCORE <= value <= MAX_SCORE:
        return ParsedScore(None, f"score {value:g} outside [0, 5]")
    return ParsedScore(value, None)


def _is_rubric_score(text: str, start: int) -> bool:
    """Whether the "score" at `start` is the rubric's label: nothing, punctuation or a total word before it."""
    line = text[text.rfind("\n", 0, start) + 1 : start]
    before = _WORD_BEFORE.search(line)
    return before is None or before.group(1).lower() in _TOTAL_WORDS
