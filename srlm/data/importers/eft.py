"""Telling EFT examples (judge prompt → justification + `Score: N`) from ordinary instruction data.

A prompt counts as a judge prompt when it contains every fixed passage of the judge template, in order, with
whitespace normalised (the instruction and response filled into the template can be anything). The example is
EFT only if its target also *concludes* with a score the pipeline's own parser reads, because training on judge
prompts whose answers carry no parsable score would teach the model to judge without scoring.
"""

from __future__ import annotations

import re
from functools import lru_cache

from srlm.data.importers.records import FieldError
from srlm.judging.parse import parse_score
from srlm.judging.template import load_template

_WHITESPACE = re.compile(r"\s+")
_PLACEHOLDER = re.compile(r"\{instruction\}|\{response\}")


def _normalise(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


@lru_cache(maxsize=8)
def template_passages(template_name: str) -> tuple[str, ...]:
    """The template's fixed text between its placeholders, whitespace-normalised, empty pieces dropped."""
    pieces = (_normalise(piece) for piece in _PLACEHOLDER.split(load_template(template_name)))
    return tuple(piece for piece in pieces if piece)


def is_judge_prompt(text: str, template_name: str = "additive_5pt") -> bool:
    normalised = _normalise(text)
    pos = 0
    for passage in template_passages(template_name):
        found = normalised.find(passage, pos)
        if found < 0:
            return False
        pos = found + len(passage)
    return True


def concluding_score(completion: str) -> tuple[float | None, str | None]:
    """The `Score: N` on the completion's last non-blank line, or why there is none."""
    lines = [line for line in completion.splitlines() if line.strip()]
    if not lines:
        return None, "empty"
    parsed = parse_score(lines[-1])
    if parsed.ok:
        return parsed.score, None
    if parse_score(completion).ok:
        return None, "the 'Score: N' is not on the last line"
    return None, parsed.error


def classify(
    prompt_messages: tuple[tuple[str, str], ...],
    completion: str,
    declared_kind: str | None,
    *,
    kind_field: str,
    target_field: str,
    template_name: str = "additive_5pt",
) -> tuple[str, float | None]:
    """(kind, score) for an example; raises FieldError when an EFT example has no concluding score."""
    if declared_kind == "ift":
        return "ift", None
    if declared_kind == "eft":
        score, why = concluding_score(completion)
        if score is None:
            raise FieldError(target_field, f"kind 'eft' needs a final 'Score: N' line in [0, 5]: {why}")
        return "eft", score
    last_user = next((content for role, content in reversed(prompt_messages) if role == "user"), "")
    if not is_judge_prompt(last_user, template_name):
        return "ift", None
    score, why = concluding_score(completion)
    if score is None:
        raise FieldError(
            target_field,
            f"the prompt is a judge prompt but the answer does not end with a 'Score: N' line in [0, 5] ({why}); "
            f"set '{kind_field}' to 'ift' to import it as instruction data anyway",
        )
    return "eft", score
