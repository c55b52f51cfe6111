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
than to copy one sentence. Everything is driven by one seeded RNG: the same IFT rows, `per_prompt` and `seed`
always give the same examples, which is how `python -m srlm.data.eft_builder` reproduces the shipped eft.jsonl.

About 10% of the instructions (chosen by a hash of their id, so adding rows never moves old ones) are marked
`split: eval`: their judgments are held out to measure judge agreement on prompts the judge never trained on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srlm.errors import ConfigError, DataError

Row = dict[str, Any]  # one seed-format IFT or EFT row, as read from JSON Lines

DEFAULT_PER_PROMPT = 4
DEFAULT_SEED = 0
DEFAULT_TEMPLATE = "additive_5pt"
EVAL_FRACTION = 0.10
MAX_JUSTIFICATION_WORDS = 100
SCORES = (0, 1, 2, 3, 4, 5)

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


# ---------------------------------------------------------------------------------------------------------------
# Candidate text
# ---------------------------------------------------------------------------------------------------------------

OPENERS = (
    "Great question!",
    "Sure, I'd be happy to help with that!",
    "Absolutely! Here's what you need to know.",
    "Of course! Let me help you with this.",
    "What a great thing to ask about!",
)
CLOSERS = (
    "I hope this helps! Let me know if you have any other questions.",
    "Feel free to ask if you need anything else!",
    "Hope that's useful! I'm always happy to help further.",
    "Let me know if there's anything else I can do for you!",
)
# Blog-style padding: each intro and outro is irrelevant to every instruction in the seed set.
PADDING = (
    (
        "I've been writing this blog for almost ten years, and readers ask me about this all the time. Before we "
        "get into it, let me tell you about my morning: the coffee machine broke, my cat knocked a plant off the "
        "windowsill, and I realised I hadn't posted anything in weeks. Anyway, here goes.",
        "That's all for today! If you liked this post, please subscribe to my newsletter, share it with your "
        "friends and check out my other articles on travel, recipes and home decor.",
    ),
    (
        "Funny story: my uncle Bob brought this exact thing up at a family barbecue last summer, right between an "
        "argument about football and a very long story about his new lawnmower. Nobody at the table agreed on "
        "anything, so I decided to write it all down.",
        "Uncle Bob, if you're reading this, you still owe me ten dollars. Leave a comment below and follow me for "
        "new posts every Tuesday!",
    ),
    (
        "Table of contents: 1. Introduction 2. My journey 3. The answer 4. Related posts. In today's fast-paced "
        "world, people search for information online every single day, and there are so many opinions out there "
        "that it can feel overwhelming. Let's dive in!",
        "Related posts you might enjoy: 10 Best Beaches in Portugal, Why I Switched to a Standing Desk, and My "
        "Favourite Podcasts of the Year. Click here to read more!",
    ),
    (
        "Before I start, a quick word from today's sponsor, SuperSocks: the comfiest socks you'll ever own, now "
        "in twelve colours. I've been wearing them all week while writing this, and my feet have never been "
        "happier. Use my code BLOG10 for ten percent off.",
        "Thanks for reading all the way to the end! Don't forget to like this post, and remember: SuperSocks, "
        "code BLOG10. See you next week!",
    ),
)
EVASIONS = (
    "I'm not sure about that. You could try searching online for more information.",
    "That's a tricky one, and it really depends on a lot of factors. You might want to ask an expert or look it "
    "up.",
    "There are many different opinions on this, so it's hard to give an answer. I'd suggest doing some research "
    "on your own.",
    "I don't have enough information to help with this right now. Maybe check a reliable website or ask someone "
    "you know.",
    "Good question! Unfortunately, I can't say for sure. It's best to consult other sources.",
)


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
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    return Candidate("chatty", f"{opener}\n\n{row['response']}\n\n{closer}", 4, {"opener": opener})


def _flattened(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    lines = [line.strip() for line in row["response"].split("\n") if line.strip()]
    return Candidate("flattened", " ".join(lines), 4)


def _padded(row: Row, rows: Sequence[Row], rng: random.Random) -> Candidate:
    intro, outro = rng.choice(PADDING)
    return Candidate("padded", f"{intro}\n\n{row['response']}\n\n{outro}", 3)


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
    return Candidate("evasive", rng.choice(EVASIONS), 1)


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
# Justifications: several phrasings per degradation, each naming the points earned under the additive rubric.
# ---------------------------------------------------------------------------------------------------------------

JUSTIFICATIONS: dict[str, tuple[str, ...]] = {
    "as_is": (
        "The response directly and fully answers the request about {topic}. It is relevant (1), covers the whole "
        "question (2), answers it in a useful way (3), and is a clear, well-organized reply from an AI Assistant "
        "(4). It is also accurate, focused and free of filler, showing expert knowledge, which earns the fifth "
        "point.",
        "This is a complete, well-structured answer on {topic}. It is relevant, addresses the whole request and "
        "resolves it usefully, earning the first three points. It reads as a direct, helpful assistant reply "
        "(fourth point), and it is precise and tailored to the user with nothing extraneous (fifth point).",
        "All five criteria are met. The reply stays on {topic}, fully resolves what the user asked, and is "
        "organized and written as a helpful assistant answer. It is concise, correct and shows real expertise, "
        "with no irrelevant material.",
        "Relevant: yes. Substantial coverage: yes, nothing important about {topic} has been left out. Useful answer to "
        "the basic question: yes. Direct, well-organized assistant response: yes. Impeccably tailored, expert and "
        "without extraneous content: yes. The response earns every point.",
    ),
    "chatty": (
        "The response answers the request about {topic} accurately and completely and is well organized, so it "
        "earns the first four points. However, it wraps the answer in generic filler, such as the opening "
        '"{opener}" and a closing offer of more help, which is extraneous, so it falls just short of the fifth '
        "point.",
        "Relevant, comprehensive and useful, and written as a helpful AI Assistant reply: four points. The core "
        "answer on {topic} holds up well, but the stock pleasantries at the start and the end add nothing, so it "
        "is not impeccably concise and misses the fifth point.",
        "A solid, correct answer about {topic} that meets the first four criteria. The fifth point requires a "
        'response without extraneous information, and phrases like "{opener}" plus the sign-off at the end are '
        "unnecessary padding.",
    ),
    "flattened": (
        "The response on {topic} gives relevant, complete and correct content, written as a direct assistant "
        "answer, earning four points. However, the separate points are run together in one dense block instead of "
        "being laid out as a list, which makes it harder to read. With this room for improvement in clarity, it "
        "does not earn the fifth point.",
        "The response covers {topic} fully and usefully from an AI Assistant's perspective (four points). Its "
        "weakness is presentation: the steps and items that should stand on their own lines are crammed into a "
        "single paragraph, so it is not impeccably organized and misses the fifth point.",
        "The response gives everything the user needs about {topic}, accurately, so the first four criteria are met. "
        "But the answer is one long run-on block with the list markers buried mid-text; a clearer layout was "
        "needed for a fifth point.",
    ),
    "padded": (
        "The response does contain a useful answer about {topic}, so it earns the first three points. But the "
        "answer is buried in irrelevant, blog-like rambling before and after it, which has nothing to do with the "
        "question. It does not read as a focused AI Assistant reply, so it misses the fourth and fifth points.",
        "Relevant (1), covers a substantial part of the request (2) and answers the basic question about {topic} "
        "usefully (3). The personal anecdotes and promotional filler around the answer make it read like a blog "
        "post rather than a direct, well-organized assistant response, so no fourth or fifth point.",
        "The core content, an answer on {topic}, is correct and helpful, earning three points. However, the user "
        "has to wade through irrelevant chatter at the start and self-promotion at the end. That extraneous "
        "material keeps it from being a clear, direct assistant answer.",
    ),
    "list_half": (
        "The response is relevant and gives useful points about {topic}, answering the basic question, so it earns "
        "three points. But it stops after {kept} items and leaves out other important ones, for example "
        '"{dropped}". Because it is not comprehensive, it does not earn the fourth or fifth point.',
        "It addresses {topic} with {kept} sensible, correct items, which is useful (three points). The list is "
        'incomplete, though: key points such as "{dropped}" are missing, so the answer is not comprehensive enough '
        "for a fourth point.",
        "Relevant (1), a substantial part of the request (2), and useful for the basic question about {topic} (3). "
        'It covers only {kept} points and omits others a complete answer should include, like "{dropped}", so it '
        "falls short of the fourth and fifth points.",
    ),
    "truncated": (
        "The response starts to address {topic} and covers part of it, which earns two points. It then breaks off "
        'mid-sentence ("…{last_words}"), so it never finishes answering. An incomplete answer like this does '
        "not resolve the question in a useful way, so it earns no more points.",
        "Relevant (1) and addresses a substantial portion of the request about {topic} (2). However, the text is "
        'cut off in the middle ("…{last_words}") and the rest of the answer is missing, so it fails the third '
        "criterion and everything after it.",
        'The beginning is on topic and correct, but the response stops abruptly at "{last_words}", leaving the '
        "question about {topic} unresolved. It earns points for relevance and partial coverage only.",
    ),
    "list_first": (
        "The response is relevant to {topic} and makes a start, but it offers only one point "
        '("{kept_item}") where the question calls for several. It addresses part of the request without '
        "resolving it, which earns two points.",
        'Relevant (1), and the single item it gives ("{kept_item}") covers a portion of what was asked (2). '
        "Everything else a useful answer about {topic} needs is missing, so it does not answer the basic question "
        "and earns no further points.",
        'It begins correctly but stops after the first item ("{kept_item}"). For a request about {topic}, one '
        "point is far from enough: relevance and partial coverage only.",
    ),
    "wrong_fact": (
        "The response is on topic and looks well organized, but it contains a factual error: it says "
        '"{wrong}" where the correct answer is "{right}". Because the key information is wrong, it does not answer '
        "the question about {topic} in a useful way. It earns one point for relevance only.",
        'The response is relevant to {topic}, but it states "{wrong}", which is incorrect; it should be '
        '"{right}". A confident answer built on a wrong fact misleads the user, so it earns only the first point.',
        "Relevant (1), but the central claim is wrong: \"{wrong}\" instead of \"{right}\". An inaccurate answer "
        "on {topic} cannot count as resolving the question or as expert, so no further points are awarded.",
    ),
    "wrong_fact_short": (
        "The response is on topic and looks well organized, but it gets a key fact about {topic} wrong, so it "
        "would mislead the user. It earns one point for relevance only.",
        "Relevant (1), but the response contains an important factual error about {topic}. Because the key "
        "information is incorrect, it does not answer the question usefully, and no further points are awarded.",
    ),
    "evasive": (
        "The response acknowledges the request about {topic} but gives no actual information, only a suggestion "
        "to look elsewhere. It earns one point for engaging with the question and none for answering it.",
        "This is an evasive non-answer. It vaguely relates to the question about {topic}, which is worth one "
        "point, but it provides nothing useful, does not address any part of the request, and is not helpful.",
        "The user asked about {topic}, and the response simply deflects without offering any content. Minimal "
        "relevance earns one point; none of the other criteria are met.",
    ),
    "off_topic": (
        "The response talks about {other_topic}, which has nothing to do with the user's request about {topic}. "
        "It is not relevant and provides none of the information asked for, so it earns no points.",
        "This response is off-topic: the user asked about {topic}, but the answer covers {other_topic}. Since it "
        "does not relate to the question at all, not even the first point is awarded.",
        "The content concerns {other_topic} and ignores the actual request about {topic}. An irrelevant answer "
        "meets none of the criteria.",
    ),
}


def _word_count(text: str) -> int:
    return len(text.split())


def justify(candidate: Candidate, topic: str, rng: random.Random) -> str:
    """A justification (at most MAX_JUSTIFICATION_WORDS words) and the final `Score: N` line."""
    values = {"topic": topic, **candidate.facts}
    phrasings = list(JUSTIFICATIONS[candidate.degradation])
    text = rng.choice(phrasings).format(**values)
    if _word_count(text) > MAX_JUSTIFICATION_WORDS and candidate.degradation == "wrong_fact":
        # Long swapped passages do not fit in a quote; say what is wrong without quoting it.
        text = rng.choice(JUSTIFICATIONS["wrong_fact_short"]).format(**values)
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
    from srlm.data.seed_data import EFT_FILE, IFT_FILE, read_ift_rows, seed_path

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
