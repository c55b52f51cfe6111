"""Build the EFT seed set (judge prompt → justification + `Score: N`) from the hand-written IFT answers.

Every EFT example judges one candidate answer to an IFT instruction. The candidate is the IFT answer itself or a
controlled degradation of it, and its score follows the paper's additive 5-point rubric:

    score  degradation   candidate                                             why
    5      as_is         the answer as written                                 all five criteria
    4      chatty        the answer wrapped in stock pleasantries              extraneous filler: no 5th point
    4      flattened     a list answer run together into one block             slight clarity problem
    3      padded        the answer inside blog-style rambling                 useful, but not an assistant's answer
    3      list_half     a list answer cut to its first half                   useful, but not comprehensive
    2      truncated     the answer broken off mid-sentence                    substantial part, not resolved
    2      list_first    only the first item of a list answer                  part of the question only
    1      wrong_fact    one key fact swapped for a wrong one (hand-picked)    relevant, but not useful
    1      evasive       a deflection ("you could search online")              barely engages
    0      off_topic     the answer to a different instruction                 not relevant

For each instruction the builder picks `per_prompt` candidates with distinct scores, always the scores used least
so far, so the six scores come out balanced. Justifications are drawn from several phrasings per degradation and
name the instruction's topic (and, where there is one, the specific flaw), so the model learns to judge rather
than to copy one sentence (the phrasings and the stock text of degraded candidates are package data,
eft_phrasings.yaml). Everything is driven by one seeded RNG: the same IFT rows, `per_prompt` and `seed`
always give the same examples, which is how `python -m srlm.data.eft_builder` reproduces the shipped eft.jsonl.

About 10% of the instructions (chosen by a hash of their id, so adding rows never moves old ones) are marked
`split: eval`: their judgments are held out to measure judge agreement on prompts the judge never trained on.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from srlm.data.seed_files import EFT_FILE, IFT_FILE, read_ift_rows, seed_path
from srlm.errors import ConfigError, DataError

Row = dict[str, Any]  # one seed-format IFT or EFT row, as read from JSON Lines

DEFAULT_PER_PROMPT = 4
DEFAULT_SEED = 0
DEFAULT_TEMPLATE = "additive_5pt"
EVAL_FRACTION = 0.10
MAX_JUSTIFICATION_WORDS = 100
SCORES = (0, 1, 2, 3, 4, 5)
PHRASINGS_PACKAGE = "srlm.data"
PHRASINGS_FILE = "eft_phrasings.yaml"
# Justifications for a wrong_fact candidate whose swapped passage is too long to quote.
SHORT_WRONG_FACT = "wrong_fact_short"

# A list item line: "- x", "* x", "1. x", "2) x".
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S")
_CODE_FENCE = "```"
_WORD = re.compile(r"\S+")
# Cutting right after one of these would leave a clean sentence or item end, not a visible break.
_CLEAN_ENDING = re.compile(r"[.!?:;,)\]\"'`*-]$|^\d+[.)]$")
MIN_WORDS_TO_TRUNCATE = 20
MIN_LIST_ITEMS = 4
PREFERRED_BONUS = 3


@dataclass(frozen=True)
class Candidate:
    """A response to judge, its rubric score, and the facts its justification may quote."""

    degradation: str
    text: str
    score: int
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Degradation:
    name: str
    score: int
    applies: Callable[[Row], bool]
    make: Callable[[Row, Sequence[Row], random.Random], Candidate]
    # Used whenever it applies: a hand-checked wrong fact teaches more about judging than a generic evasion.
    preferred: bool = False


Text = Annotated[str, StringConstraints(pattern=r"\S")]  # not empty or only whitespace


class Padding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    intro: Text
    outro: Text


class Phrasings(BaseModel):
    """The stock text of eft_phrasings.yaml: what degraded candidates are made of, and the justifications."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    openers: tuple[Text, ...] = Field(min_length=1)
    closers: tuple[Text, ...] = Field(min_length=1)
    padding: tuple[Padding, ...] = Field(min_length=1)  # the intro and outro around a padded answer
    evasions: tuple[Text, ...] = Field(min_length=1)
    # Per degradation name, plus SHORT_WRONG_FACT.
    justifications: dict[str, Annotated[tuple[Text, ...], Field(min_length=1)]]


@functools.cache
def phrasings() -> Phrasings:
    """The shipped phrasing tables (package data), read once."""
    where = f"{PHRASINGS_PACKAGE}/{PHRASINGS_FILE}"
    try:
        text = resources.files(PHRASINGS_PACKAGE).joinpath(PHRASINGS_FILE).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{where}: cannot read the EFT phrasing tables: {exc}") from exc
    return parse_phrasings(text, where)


def parse_phrasings(text: str, where: str) -> Phrasings:
    """Phrasing tables from YAML text; DataError naming `where` and the bad key."""
    from srlm.config import load_yaml_strictly

    try:
        tables = Phrasings.model_validate(load_yaml_strictly(text, where, DataError))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise DataError(f"{where}: key '{key}': {first['msg']}") from exc
    missing = [name for name in [d.name for d in DEGRADATIONS] + [SHORT_WRONG_FACT] if name not in tables.justifications]
    if missing:
        raise DataError(f"{where}: key 'justifications': no phrasings for {', '.join(missing)}")
    return tables


# ---------------------------------------------------------------------------------------------------------------
# Candidate text
# ---------------------------------------------------------------------------------------------------------------

def _has_code(row: Row) -> bool:
    return _CODE_FENCE in row["response"]


def _item_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.split("\n")) if _LIST_ITEM.match(line)]


def _is_list_answer(row: Row) -> bool:
    return not _has_code(row) and len(_item_lines(row["response"])) >= MIN_LIST_ITEMS


def _item_text(line: str, max_words: int = 8) -> str:
    """A list item without its marker, shortened for quoting in a justification."""
    words = _LIST_ITEM.sub(lambda m: m.group(0)[-1], line, count=1).split()
    text = " ".join(words[:max_words]).rstrip(".,;:")
    return text + ("…" if len(words) > max_words else "")


def _as_is(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    return Candidate("as_is", row["response"], 5)


def _chatty(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    opener, closer = rng.choice(phrasings().openers), rng.choice(phrasings().closers)
    return Candidate("chatty", f"{opener}\n\n{row['response']}\n\n{closer}", 4, {"opener": opener})


def _flattened(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    lines = [line.strip() for line in row["response"].split("\n") if line.strip()]
    return Candidate("flattened", " ".join(lines), 4)


def _padded(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    padding = rng.choice(phrasings().padding)
    return Candidate("padded", f"{padding.intro}\n\n{row['response']}\n\n{padding.outro}", 3)


def _list_half(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    lines = row["response"].split("\n")
    items = _item_lines(row["response"])
    keep = len(items) // 2
    # Cut right after the last kept item, so no heading of a dropped section is left dangling.
    text = "\n".join(lines[: items[keep - 1] + 1]).rstrip()
    facts = {"kept": str(keep), "dropped": _item_text(lines[items[keep]])}
    return Candidate("list_half", text, 3, facts)


def _list_first(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    lines = row["response"].split("\n")
    items = _item_lines(row["response"])
    text = "\n".join(lines[: items[0] + 1]).rstrip()
    return Candidate("list_first", text, 2, {"kept_item": _item_text(lines[items[0]])})


def _can_truncate(row: Row) -> bool:
    return len(row["response"].split()) >= MIN_WORDS_TO_TRUNCATE


def _truncated(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    """Cut between 35% and 60% of the words, after a word that ends no sentence, so the break is visible."""
    text = row["response"]
    words = list(_WORD.finditer(text))
    cut = int(len(words) * rng.uniform(0.35, 0.6))
    while cut < len(words) - 1 and _CLEAN_ENDING.search(words[cut - 1].group(0)):
        cut += 1
    truncated = text[: words[cut - 1].end()]
    last_words = " ".join(m.group(0) for m in words[max(0, cut - 4) : cut])
    return Candidate("truncated", truncated, 2, {"last_words": last_words})


def _has_factual_error(row: Row) -> bool:
    return bool(row.get("factual_error"))


def _wrong_fact(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    error = row["factual_error"]
    text = row["response"].replace(error["find"], error["replace"])
    return Candidate("wrong_fact", text, 1, {"wrong": error["replace"], "right": error["find"]})


def _evasive(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    return Candidate("evasive", rng.choice(phrasings().evasions), 1)


def _off_topic(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    donors = [other for other in rows if other["category"] != row["category"]]
    donor = rng.choice(donors)
    return Candidate("off_topic", donor["response"], 0, {"other_topic": donor["topic"]})


def _always(row: Row) -> bool:
    return True


DEGRADATIONS: tuple[Degradation, ...] = (
    Degradation("as_is", 5, _always, _as_is),
    Degradation("chatty", 4, _always, _chatty),
    Degradation("flattened", 4, _is_list_answer, _flattened),
    Degradation("padded", 3, _always, _padded),
    Degradation("list_half", 3, _is_list_answer, _list_half),
    Degradation("truncated", 2, _can_truncate, _truncated),
    Degradation("list_first", 2, _is_list_answer, _list_first),
    Degradation("wrong_fact", 1, _has_factual_error, _wrong_fact, preferred=True),
    Degradation("evasive", 1, _always, _evasive),
    Degradation("off_topic", 0, _always, _off_topic),
)


# ---------------------------------------------------------------------------------------------------------------
# Justifications: several phrasings per degradation (eft_phrasings.yaml), each naming the points earned under the
# additive rubric.
# ---------------------------------------------------------------------------------------------------------------


def _word_count(text: str) -> int:
    return len(text.split())


def justify(candidate: Candidate, topic: str, rng: random.Random) -> str:
    """A justification (at most MAX_JUSTIFICATION_WORDS words) and the final `Score: N` line."""
    values = {"topic": topic, **candidate.facts}
    justifications = phrasings().justifications
    text = rng.choice(justifications[candidate.degradation]).format(**values)
    if _word_count(text) > MAX_JUSTIFICATION_WORDS and candidate.degradation == "wrong_fact":
        # Long swapped passages do not fit in a quote; say what is wrong without quoting it.
        text = rng.choice(justifications[SHORT_WRONG_FACT]).format(**values)
    if _word_count(text) > MAX_JUSTIFICATION_WORDS:
        raise DataError(
            f"EFT justification for a {candidate.degradation} candidate on {topic!r} exceeds "
            f"{MAX_JUSTIFICATION_WORDS} words"
        )
    return f"{text}\n\nScore: {candidate.score}"


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------


def is_eval_source(ift_id: str) -> bool:
    """Whether an IFT id's EFT examples are held out; a hash, so adding rows never changes existing splits."""
    digest = hashlib.sha256(ift_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < EVAL_FRACTION


def _choose(
    row: Row, per_prompt: int, score_counts: Counter, used: Counter, rng: random.Random
) -> list[Degradation]:
    """Distinct-score degradations for one row: least-used scores first, least-used degradation within a score.

    A score with a preferred degradation for this row counts as less used than it is, so the preferred one is
    almost always picked; the other rows make up the balance.
    """
    by_score: dict[int, list[Degradation]] = {}
    for degradation in DEGRADATIONS:
        if degradation.applies(row):
            by_score.setdefault(degradation.score, []).append(degradation)
    preferred = {s: [d for d in options if d.preferred] for s, options in by_score.items()}
    scores = sorted(by_score)
    rng.shuffle(scores)  # ties between equally used scores are broken at random, not by score order
    scores.sort(key=lambda s: score_counts[s] - (PREFERRED_BONUS if preferred[s] else 0))
    chosen = []
    for score in sorted(scores[:per_prompt], reverse=True):
        options = preferred[score] or by_score[score]
        fewest = min(used[d.name] for d in options)
        chosen.append(rng.choice([d for d in options if used[d.name] == fewest]))
    return chosen


def build_eft(
    ift_rows: Sequence[Row],
    per_prompt: int = DEFAULT_PER_PROMPT,
    seed: int = DEFAULT_SEED,
    template: str = DEFAULT_TEMPLATE,
) -> list[Row]:
    """EFT rows (judge prompt → justification + `Score: N`) for seed-format IFT rows; deterministic in its inputs.

    per_prompt: candidates judged per instruction, each with a different score (1-6; fewer makes a smaller,
    cheaper set with the same balance).
    """
    from srlm.judging.template import load_template, render_judge_prompt

    if not 1 <= per_prompt <= len(SCORES):
        raise ConfigError(f"per_prompt must be between 1 and {len(SCORES)}, got {per_prompt}")
    if len({row["category"] for row in ift_rows}) < 2:
        raise DataError("EFT building needs IFT rows from at least two categories (for off-topic candidates)")
    judge_template = load_template(template)
    rng = random.Random(seed)
    score_counts: Counter = Counter()
    used: Counter = Counter()
    out: list[Row] = []
    for row in ift_rows:
        split = "eval" if is_eval_source(row["id"]) else "train"
        for degradation in _choose(row, per_prompt, score_counts, used, rng):
            candidate = degradation.make(row, ift_rows, rng)
            score_counts[candidate.score] += 1
            used[degradation.name] += 1
            out.append(
                {
                    "id": f"eft-{row['id'].removeprefix('ift-')}-{degradation.name}",
                    "source_ift_id": row["id"],
                    "degradation": degradation.name,
                    "split": split,
                    "instruction": row["prompt"],
                    "candidate": candidate.text,
                    "prompt": render_judge_prompt(judge_template, row["prompt"], candidate.text),
                    "response": justify(candidate, row["topic"], rng),
                    "score": candidate.score,
                }
            )
    return out


def eft_jsonl(rows: Sequence[Row]) -> str:
    """The exact text of an eft.jsonl file: one JSON object per line, UTF-8 kept as is."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def summarize(rows: Sequence[Row]) -> dict[str, Any]:
    """Counts for the README and the CLI: examples, per score, per degradation, per split."""
    return {
        "examples": len(rows),
        "sources": len({row["source_ift_id"] for row in rows}),
        "by_score": dict(sorted(Counter(row["score"] for row in rows).items())),
        "by_degradation": dict(sorted(Counter(row["degradation"] for row in rows).items())),
        "by_split": dict(sorted(Counter(row["split"] for row in rows).items())),
        "eval_sources": len({row["source_ift_id"] for row in rows if row["split"] == "eval"}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srlm.data.eft_builder",
        description="Rebuild the shipped EFT seed set from the shipped IFT answers (deterministic).",
    )
    parser.add_argument("--ift", default=str(seed_path(IFT_FILE)), help="IFT JSON Lines to build from.")
    parser.add_argument("--output", default=str(seed_path(EFT_FILE)), help="Where to write the EFT JSON Lines.")
    parser.add_argument("--per-prompt", type=int, default=DEFAULT_PER_PROMPT, help="Candidates per instruction.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="RNG seed.")
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 if --output differs.")
    args = parser.parse_args(argv)

    rows = build_eft(read_ift_rows(args.ift), per_prompt=args.per_prompt, seed=args.seed)
    text = eft_jsonl(rows)
    output = Path(args.output)
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            print(f"{output} is out of date; run python -m srlm.data.eft_builder", file=sys.stderr)
            return 1
        print(f"{output} is up to date ({len(rows)} examples)")
        return 0
    output.write_text(text, encoding="utf-8")
    print(json.dumps({"output": str(output), **summarize(rows)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
