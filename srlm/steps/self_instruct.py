"""Self-instruct prompt generation: the few-shot request, reading a task out of a completion, and the filters.

The paper (Yuan et al., 2024, §2.2 / Appendix) generates new prompts by showing the model 8 tasks sampled from the
seed IFT prompts and letting it write one more. A completion is kept only if it is one well-formed task, not a
copy of what it was shown, and neither an exact nor a near duplicate (ROUGE-L, as in Self-Instruct) of a seed or of
a prompt kept before it.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

INSTRUCTION = (
    "Come up with a series of tasks and questions. Only the task/question, no further text/explanation, "
    "no additional information.\nThe task or question should be something a person would ask a chatbot.\n\n"
)
OPEN_TAG = "<task>"
CLOSE_TAG = "</task>"
# Any spelling of the tag left inside an extracted task means the model broke the format.
_ANY_TAG = re.compile(r"</?\s*task\s*>?|<\s*/?\s*task\b", re.IGNORECASE)
# rouge-score's default tokenizer: lowercase, alphanumeric runs.
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")
_SPACES = re.compile(r"[ \t\f\v]+")

# Rejection reasons, in the order the filters run (the summary lists them in this order).
REASONS = (
    "no_task",  # nothing between the tags
    "truncated",  # hit max_new_tokens before closing the task: it ends mid-sentence or mid-word
    "leftover_tag",  # a <task> / </task> fragment inside the task
    "too_short",
    "too_long",
    "bad_start",  # starts with punctuation or a digit list marker, i.e. not a question or instruction
    "copy_of_shot",  # repeats one of the tasks it was shown
    "duplicate",  # same normalised text as a seed or an already-kept prompt
    "near_duplicate",  # ROUGE-L F1 at or above the threshold against a seed or an already-kept prompt
)


def build_request(shots: Sequence[str]) -> str:
    """The raw few-shot text: instruction, the shots as <task>…</task>, then an open <task> for the model."""
    body = "".join(f"{OPEN_TAG}{shot.strip()}{CLOSE_TAG}\n" for shot in shots)
    return f"{INSTRUCTION}{body}{OPEN_TAG}"


def sample_shots(seeds: Sequence[str], num_shots: int, rng: random.Random) -> list[str]:
    return rng.sample(list(seeds), min(num_shots, len(seeds)))


def normalise(text: str) -> str:
    """The key for exact de-duplication: case, spacing and surrounding punctuation/quotes do not matter."""
    return " ".join(text.lower().split()).strip(" \"'`.!?;:,")


def rouge_tokens(text: str) -> list[str]:
    return _ROUGE_TOKEN.findall(text.lower())


def clean_task(text: str) -> str:
    """Tidy whitespace but keep line structure (code and list prompts are multi-line)."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    for line in lines:  # collapse runs of blank lines to one
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def extract_task(completion: str, finish_reason: str) -> tuple[str | None, str | None]:
    """The first task in a completion that continues an open <task>, or (None, reason)."""
    text = completion
    closed = CLOSE_TAG in text
    if closed:
        text = text.split(CLOSE_TAG, 1)[0]
    elif finish_reason == "length":
        # The backend stops at </task> (stripped) or at end-of-turn; running out of tokens means the task was cut.
        return None, "truncated"
    task = clean_task(text)
    if not task:
        return None, "no_task"
    if _ANY_TAG.search(task):
        return None, "leftover_tag"
    return task, None


class NearDuplicateIndex:
    """ROUGE-L F1 against every text added so far, computed in C++ by rapidfuzz.

    ROUGE-L F1 of token sequences a, b is 2·LCS(a, b)/(|a| + |b|), which is exactly rapidfuzz's normalised Indel
    similarity over the token lists, so the filter matches Self-Instruct's rouge-score filter without its
    pure-Python LCS.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._pool: list[list[str]] = []

    def __len__(self) -> int:
        return len(self._pool)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        if tokens:
            self._pool.append(tokens)

    def best_match(self, text: str) -> float:
        """Highest ROUGE-L F1 of `text` against the pool if it reaches the threshold, else 0.0."""
        from rapidfuzz import process
        from rapidfuzz.distance import Indel

        tokens = rouge_tokens(text)
        if not tokens or not self._pool:
            return 0.0
        hit = process.extractOne(tokens, self._pool, scorer=Indel.normalized_similarity, score_cutoff=self.threshold)
        return float(hit[1]) if hit else 0.0

    def is_near_duplicate(self, text: str) -> bool:
        return self.best_match(text) >= self.threshold


@dataclass
class PromptFilter:
    """Stateful screening of generated tasks: everything it accepts is new relative to seeds and earlier accepts."""

    seeds: Sequence[str]
    min_chars: int
    max_chars: int
    near_duplicate_threshold: float
    rejected: Counter = field(default_factory=Counter)
    accepted: int = 0

    def __post_init__(self) -> None:
        self._seen: set[str] = set()
        self._index = NearDuplicateIndex(self.near_duplicate_threshold)
        for seed in self.seeds:
            self._remember(seed)

    def _remember(self, text: str) -> None:
        self._seen.add(normalise(text))
        self._index.add(text)

    def screen(self, completion: str, finish_reason: str, shots: Sequence[str]) -> tuple[str | None, str | None]:
        """(task, None) when accepted (and remembered), else (None, reason)."""
        task, reason = extract_task(completion, finish_reason)
        if task is None:
            return self._reject(reason)
        if len(task) < self.min_chars:
            return self._reject("too_short")
        if len(task) > self.max_chars:
            return self._reject("too_long")
        if not (task[0].isalnum() or task[0] in "\"'¿¡(") or re.match(r"^\d+[.)]\s", task):
            return self._reject("bad_start")
        key = normalise(task)
        if key in {normalise(shot) for shot in shots}:
            return self._reject("copy_of_shot")
        if key in self._seen:
            return self._reject("duplicate")
        if self._index.is_near_duplicate(task):
            return self._reject("near_duplicate")
        self._remember(task)
        self.accepted += 1
        return task, None

    def remember_accepted(self, task: str) -> None:
        """Register a prompt kept by an earlier (resumed) round so that new ones are screened against it."""
        self._remember(task)
        self.accepted += 1

    def _reject(self, reason: str | None) -> tuple[None, str]:
        reason = reason or "no_task"
        self.rejected[reason] += 1
        return None, reason
