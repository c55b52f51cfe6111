"""Pairwise judging in both orders, written as AlpacaEval-style annotations.

Each pair (instruction, output_1, output_2) is judged twice: once with output_1 shown as "Response A" and once
with the two swapped, so a judge's position bias cancels. The two verdicts, mapped back to outputs, combine as:
both orders name the same output -> that output wins (preference 1 or 2); anything else (the orders disagree, one
or both say tie, or a judgment has no parsable "Winner: …" line) -> tie (1.5). The raw judgments and per-order
verdicts travel in `raw_judgments_json`, so parse failures stay visible. For TRL-style callers a verdict also reads
as the index of the preferred completion (0 = output_1, 1 = output_2, -1 = tie) and as a score for output_1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa

from srlm.store.schemas import schema

PLACEHOLDERS = ("{instruction}", "{output_1}", "{output_2}")

# "Winner: A", "**Winner:** Response B", "winner = tie": the label, then the verdict up to the end of its line. The
# last label in the judgment counts.
_VERDICT = re.compile(r"\bwinner\s*\**\s*[:=][\s*_\"'`]*([^\n]*)", re.IGNORECASE)
# A tie, said any of the usual ways: "tie", "a tie", "it's a tie", "draw", "neither", "both", "equal". Checked before
# A/B, because "a tie" and "both" start with the letters of a verdict.
_TIE = re.compile(
    r"(?:it(?:'s|\u2019s|\s+is)\s+)?(?:a\s+)?(?:tie|draw)\b|(?:neither|both|equal)\b", re.IGNORECASE
)
# A or B as a word of its own, optionally named ("Response A", "Assistant B", "[[A]]", "(b)"): "Answer B" is B, and
# "Average" or "Better" are no verdict.
_SIDE = re.compile(
    r"(?:(?:the\s+)?(?:response|output|answer|assistant|model|option|candidate)\s*)?[\[(]*\s*([ab])(?![\w'\u2019])",
    re.IGNORECASE,
)
# A bare lowercase "a" followed by another word is the article ("Winner: a close call"), not response A.
_ARTICLE = re.compile(r"a\s+[^\W\d_]")


@dataclass(frozen=True)
class PairToJudge:
    instruction: str
    output_1: str  # the baseline / system B
    output_2: str  # the model / system A
    generator_1: str | None = None
    generator_2: str | None = None


@dataclass(frozen=True)
class PairVerdict:
    preference: float  # 1 (output_1), 2 (output_2) or 1.5 (tie)
    forward: str | None  # winner in the forward order, as "1", "2", "tie"; None when unparsed
    reverse: str | None
    forward_text: str
    reverse_text: str
    # A rubric judge's comparison (srlm.evaluation.judges.RubricJudge): each output's sampled judgments, parsed
    # scores and mean; None for a pairwise judge. forward == reverse then, as scoring has no order.
    rubric: dict | None = None

    @property
    def parsed_orders(self) -> int:
        return (self.forward is not None) + (self.reverse is not None)

    @property
    def preferred_index(self) -> int:
        """TRL's pairwise answer: 0 when output_1 wins, 1 when output_2 wins, -1 for a tie (incl. unparsed)."""
        return {1.0: 0, 2.0: 1}.get(self.preference, -1)

    @property
    def output_1_score(self) -> float:
        """How strongly the two orders favour output_1: the mean over orders of 1 (output_1), 0 (output_2) or 0.5
        (tie / unparsed). 1.0 and 0.0 are the two agreeing wins; one order undecided gives 0.75 or 0.25."""
        points = {"1": 1.0, "2": 0.0}
        return (points.get(self.forward, 0.5) + points.get(self.reverse, 0.5)) / 2


@lru_cache(maxsize=8)
def load_pairwise_template(name_or_path: str = "pairwise") -> str:
    """A shipped pairwise template by name, or a template file; it must hold {instruction}, {output_1}, {output_2}."""
    from srlm.judging.template import load_prompt_template

    return load_prompt_template(
        name_or_path, package="srlm.evaluation", placeholders=PLACEHOLDERS, what="pairwise template"
    )


def render_pairwise_prompt(template: str, instruction: str, first: str, second: str) -> str:
    """Fill the template in one pass, so text inside a response that looks like a placeholder stays as written."""
    values = {"{instruction}": instruction, "{output_1}": first, "{output_2}": second}
    return re.sub(r"\{instruction\}|\{output_1\}|\{output_2\}", lambda m: values[m.group(0)], template)


def parse_verdict(judgment: str | None) -> str | None:
    """'A', 'B' or 'tie' from the judge's last "Winner: …" line; None when there is none, or when what follows the
    label is neither side nor a tie (a verdict that cannot be read is no verdict, never a side)."""
    matches = list(_VERDICT.finditer(judgment or ""))
    if not matches:
        return None
    verdict = matches[-1].group(1)
    if _TIE.match(verdict):
        return "tie"
    side = _SIDE.match(verdict)
    if side is None or _ARTICLE.match(verdict):
        return None
    return side.group(1).upper()


def combine_orders(forward: str | None, reverse: str | None) -> tuple[float, str | None, str | None]:
    """Map per-order verdicts (forward: A = output_1; reverse: A = output_2) to outputs and combine them."""
    fwd = {"A": "1", "B": "2", "tie": "tie"}.get(forward) if forward else None
    rev = {"A": "2", "B": "1", "tie": "tie"}.get(reverse) if reverse else None
    if fwd is not None and fwd == rev and fwd != "tie":
        return (1.0 if fwd == "1" else 2.0), fwd, rev
    return 1.5, fwd, rev


def pairwise_prompts(pairs: Sequence[PairToJudge], template: str) -> list[str]:
    """2 prompts per pair, forward then reverse."""
    prompts = []
    for pair in pairs:
        prompts.append(render_pairwise_prompt(template, pair.instruction, pair.output_1, pair.output_2))
        prompts.append(render_pairwise_prompt(template, pair.instruction, pair.output_2, pair.output_1))
    return prompts


def verdicts_from_judgments(pairs: Sequence[PairToJudge], judgments: Sequence[str | None]) -> list[PairVerdict]:
    if len(judgments) != 2 * len(pairs):
        raise ValueError(f"expected {2 * len(pairs)} judgments (two orders per pair), got {len(judgments)}")
    out = []
    for i in range(len(pairs)):
        fwd_text, rev_text = judgments[2 * i] or "", judgments[2 * i + 1] or ""
        preference, fwd, rev = combine_orders(parse_verdict(fwd_text), parse_verdict(rev_text))
        out.append(PairVerdict(preference, fwd, rev, fwd_text, rev_text))
    return out


def pair_verdicts(pairs: Sequence[PairToJudge], judge, *, template: str | None = None) -> list[PairVerdict]:
    """Judge every pair in both orders with `judge` (anything with `complete(prompts) -> texts`, e.g. a
    srlm.evaluation.judges.PairwiseJudge); one verdict per pair, with both orders' detail."""
    template = template or load_pairwise_template()
    judgments = judge.complete(pairwise_prompts(pairs, template)) if pairs else []
    return verdicts_from_judgments(pairs, judgments)


def judge_pairs(pairs: Sequence[PairToJudge], judge, *, template: str | None = None) -> tuple[pa.Table, dict]:
    """Judge every pair in both orders with `judge` (srlm.evaluation.judges.Judge); returns (annotations, stats).
    A judge that compares by scoring (`scores_pointwise`, the RubricJudge) makes its own verdicts."""
    if getattr(judge, "scores_pointwise", False):
        verdicts = judge.pair_verdicts(pairs)
    else:
        verdicts = pair_verdicts(pairs, judge, template=template)
    return annotations_table(pairs, verdicts, judge_name=judge.name), verdict_stats(verdicts)


def annotations_table(pairs: Sequence[PairToJudge], verdicts: Sequence[PairVerdict], *, judge_name: str) -> pa.Table:
    rows = []
    for pair, verdict in zip(pairs, verdicts):
        raw = {
            "judge": judge_name,
            "forward": {"winner": verdict.forward, "text": verdict.forward_text},
            "reverse": {"winner": verdict.reverse, "text": verdict.reverse_text},
            **({"rubric": verdict.rubric} if verdict.rubric is not None else {}),
        }
        rows.append(
            {
                "instruction": pair.instruction,
                "output_1": pair.output_1,
                "output_2": pair.output_2,
                "generator_1": pair.generator_1,
                "generator_2": pair.generator_2,
                "preference": verdict.preference,
                "raw_judgments_json": json.dumps(raw, ensure_ascii=False),
            }
        )
    return pa.Table.from_pylist(rows, schema=schema("annotations"))


def verdict_stats(verdicts: Sequence[PairVerdict]) -> dict:
    n = len(verdicts)
    judged_orders = 2 * n
    parsed = sum(v.parsed_orders for v in verdicts)
    agree = sum(1 for v in verdicts if v.forward is not None and v.forward == v.reverse)
    return {
        "n_pairs": n,
        "order_parse_rate": parsed / judged_orders if judged_orders else None,
        "order_agreement": agree / n if n else None,
    }
