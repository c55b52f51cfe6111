"""Self-instruct prompt generation: the few-shot request, reading a task out of a completion, and the filters.

The paper (Yuan et al., 2024, §2.2 and its training details) generates new prompts with a fixed Llama 2-Chat 70B,
8-shot, following Self-Instruct (Wang et al., 2023): 6 demonstrations sampled from the seed IFT prompts and 2 from
the prompts generated before, sampled at T = 0.6, p = 0.9, and filtered as Self-Instruct filters. A completion is
kept only if it is one well-formed task of a reasonable length (Self-Instruct: more than 3 and at most 150 words),
starts like an instruction (not with punctuation or a non-ASCII character), mentions nothing a text-only model
cannot do (Self-Instruct's keyword list: image, graph, file, …), is not a copy of what it was shown, and is neither
an exact nor a near duplicate (ROUGE-L F1 ≥ 0.7) of a seed, of a prompt of an earlier iteration of the run or of a
prompt kept before it.
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
    "too_short",  # under min_chars characters or min_words words
    "too_long",  # over max_chars characters or max_words words
    "bad_start",  # starts with punctuation, a symbol or a digit list marker, i.e. not a question or instruction
    "non_ascii_start",  # starts with a non-ASCII character (Self-Instruct's non-English filter)
    "keyword",  # mentions a blocked keyword (image, graph, file, …): a task a text-only model cannot do
    "blocked_prefix",  # starts with a blocked phrase (Self-Instruct: "Write a program")
    "copy_of_shot",  # repeats one of the tasks it was shown
    "duplicate",  # same normalised text as a seed or an already-kept prompt
    "near_duplicate",  # ROUGE-L F1 at or above the threshold against a seed or an already-kept prompt
    "earlier_iteration",  # the same as, or a near duplicate of, a prompt of an earlier iteration of the run
)


def build_request(shots: Sequence[str]) -> str:
    """The raw few-shot text: instruction, the shots as <task>…</task>, then an open <task> for the model."""
    body = "".join(f"{OPEN_TAG}{shot.strip()}{CLOSE_TAG}\n" for shot in shots)
    return f"{INSTRUCTION}{body}{OPEN_TAG}"


def sample_shots(
    seeds: Sequence[str],
    num_shots: int,
    rng: random.Random,
    generated: Sequence[str] = (),
    num_generated: int = 0,
) -> list[str]:
    """The demonstrations of one request, as Self-Instruct draws them: `num_generated` of the prompts generated so
    far (fewer while fewer exist), seed prompts for the rest, in random order. Deterministic given `rng`."""
    take = generated_shot_count(num_shots, num_generated, len(generated))
    shots = rng.sample(generated, take) if take else []
    shots += rng.sample(seeds, min(num_shots - take, len(seeds)))
    if take:  # rng.sample's order is already random; only a mix needs shuffling (and seed-only draws stay as before)
        rng.shuffle(shots)
    return shots


def generated_shot_count(num_shots: int, num_generated: int, available: int) -> int:
    """How many of a request's demonstrations are generated prompts, with `available` of them to draw from."""
    return min(num_generated, num_shots, available)


def parse_phrases(text: str) -> tuple[str, ...]:
    """A comma-separated config list (prompts.blocked_keywords / blocked_prefixes) as its non-empty phrases."""
    return tuple(phrase.strip() for phrase in text.split(",") if phrase.strip())


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str] | None:
    """Any of `keywords` as a whole word or phrase, in any case and spacing (Self-Instruct: r"\\b(word)\\b")."""
    if not keywords:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, k.split())) for k in keywords)
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


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
    """Stateful screening of generated tasks: everything it accepts is new relative to the seeds, the earlier
    iterations' prompts (`earlier`) and what it accepted before.

    The filters that are off by default here (word limits, keywords, prefixes, the ASCII start) are on in a step,
    which builds its filter from the config (`from_config`).
    """

    seeds: Sequence[str]
    min_chars: int
    max_chars: int
    near_duplicate_threshold: float
    earlier: Sequence[str] = ()
    min_words: int = 0
    max_words: int | None = None
    blocked_keywords: Sequence[str] = ()
    blocked_prefixes: Sequence[str] = ()
    ascii_start: bool = False
    rejected: Counter = field(default_factory=Counter)
    accepted: int = 0

    @classmethod
    def from_config(cls, cfg, seeds: Sequence[str], earlier: Sequence[str] = ()) -> PromptFilter:
        """The filter the prompts step screens with: `cfg` is the config's prompts section."""
        return cls(
            seeds=seeds,
            min_chars=cfg.min_chars,
            max_chars=cfg.max_chars,
            near_duplicate_threshold=cfg.near_duplicate_threshold,
            earlier=earlier,
            min_words=cfg.min_words,
            max_words=cfg.max_words,
            blocked_keywords=parse_phrases(cfg.blocked_keywords),
            blocked_prefixes=parse_phrases(cfg.blocked_prefixes),
            ascii_start=cfg.ascii_start,
        )

    def __post_init__(self) -> None:
        self._seen: set[str] = set()
        self._index = NearDuplicateIndex(self.near_duplicate_threshold)
        self._keywords = keyword_pattern(self.blocked_keywords)
        self._prefixes = tuple(normalise(p) for p in self.blocked_prefixes)
        for seed in self.seeds:
            self._remember(seed)
        # The earlier iterations' prompts are screened apart from the rest, so their rejections count on their own.
        self._earlier_seen = {normalise(text) for text in self.earlier}
        self._earlier_index = NearDuplicateIndex(self.near_duplicate_threshold)
        for text in self.earlier:
            self._earlier_index.add(text)
        # What later requests may show as generated demonstrations: earlier iterations' prompts, then accepted ones.
        self.generated: list[str] = list(self.earlier)

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
        words = len(task.split())
        if words < self.min_words:
            return self._reject("too_short")
        if self.max_words is not None and words > self.max_words:
            return self._reject("too_long")
        first = task[0]
        # Punctuation (Self-Instruct's rule), a list marker, or a symbol or bullet outside ASCII; "¿¡" open questions.
        if not (first.isalnum() or first in "¿¡") or re.match(r"^\d+[.)]\s", task):
            return self._reject("bad_start")
        if self.ascii_start and not first.isascii():
            return self._reject("non_ascii_start")
        if self._keywords is not None and self._keywords.search(task):
            return self._reject("keyword")
        key = normalise(task)
        if any(key.startswith(prefix) for prefix in self._prefixes):
            return self._reject("blocked_prefix")
        if key in {normalise(shot) for shot in shots}:
            return self._reject("copy_of_shot")
        if key in self._seen:
            return self._reject("duplicate")
        if self._index.is_near_duplicate(task):
            return self._reject("near_duplicate")
        if key in self._earlier_seen or self._earlier_index.is_near_duplicate(task):
            return self._reject("earlier_iteration")
        self.remember_accepted(task)
        return task, None

    def remember_accepted(self, task: str) -> None:
        """Register an accepted prompt (or one kept by an earlier, resumed round): new ones are screened against it
        and later requests may show it as a generated demonstration."""
        self._remember(task)
        self.generated.append(task)
        self.accepted += 1

    def _reject(self, reason: str | None) -> tuple[None, str]:
        reason = reason or "no_task"
        self.rejected[reason] += 1
        return None, reason
