"""Rows of chat-style SFT data, shared by the jsonl and parquet importers.

A row is one of (checked in this order):
  * `messages`: [{role, content}, …] whose last message is the assistant's answer (the training target);
  * `prompt_messages` + `completion`: srlm's own `sft_examples` layout, so exported tables re-import as they are;
  * `prompt` + `response` (optional `system`).
An optional `kind` ("ift" / "eft") fixes the example's kind; without one, a judge prompt whose answer concludes
with `Score: N` is EFT and everything else IFT (see eft.py).
"""

from __future__ import annotations

from typing import Any

from srlm.data.importers.eft import classify
from srlm.data.importers.options import ReadOptions
from srlm.data.importers.records import (
    SFT_KINDS,
    FieldError,
    SftExample,
    chat_messages,
    optional_text,
    require_mapping,
    require_text,
    split_conversation,
    wrapped_records,
)


def _declared_kind(row: dict) -> str | None:
    kind = row.get("kind")
    if kind is None:
        return None
    if kind not in SFT_KINDS:
        raise FieldError("kind", f"expected one of ift/eft or null, got {kind!r}")
    return kind


def _prompt_and_target(row: dict) -> tuple[tuple[tuple[str, str], ...], str, str]:
    """(prompt messages, target text, name of the target field)."""
    if row.get("messages") is not None:
        messages = chat_messages(row["messages"], "messages")
        prompt, target = split_conversation(messages, "messages")
        return prompt, target, f"messages[{len(messages) - 1}].content"
    if row.get("prompt_messages") is not None:
        prompt = tuple(chat_messages(row["prompt_messages"], "prompt_messages"))
        if prompt[-1][0] != "user":
            last = len(prompt) - 1
            reason = f"the last prompt message must be the user's, got {prompt[last][0]!r}"
            raise FieldError(f"prompt_messages[{last}].role", reason)
        return prompt, require_text(row, "completion"), "completion"
    if "prompt" in row or "response" in row:
        system = optional_text(row, "system")
        prompt = require_text(row, "prompt")
        target = require_text(row, "response")
        messages = (("system", system),) if system and system.strip() else ()
        return messages + (("user", prompt),), target, "response"
    raise wrapped_records(row) or FieldError("messages", "missing: a row needs 'messages', or 'prompt' and 'response'")


def chat_row_to_example(value: Any, source: str, options: ReadOptions) -> SftExample:
    row = require_mapping(value, None)
    declared = _declared_kind(row)
    prompt, target, target_field = _prompt_and_target(row)
    kind, score = classify(
        prompt, target, declared, kind_field="kind", target_field=target_field, template_name=options.judge_template
    )
    return SftExample(kind=kind, prompt_messages=prompt, completion=target, source=source, score=score)
