"""What every importer produces, and the field checks they share.

Importers turn one source row into validated records (SFT examples and human-ranked evaluation groups) or raise
`FieldError` naming the offending field. The caller attaches file and line, so a converter never has to know
where its row came from.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHAT_ROLES = ("user", "assistant", "system")
SFT_KINDS = ("ift", "eft")


class FieldError(Exception):
    """One row is malformed: `field` is a path into the row (e.g. "messages[2].role"), `reason` says why."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(f"field '{field}': {reason}" if field else reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Issue:
    """A row that could not be imported, where it is, and why."""

    file: str
    line: int | None
    field: str | None
    reason: str

    def message(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        what = f"field '{self.field}': {self.reason}" if self.field else self.reason
        return f"{where}: {what}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.reason}


def stable_id(*parts: Any) -> str:
    """A short content hash: the same source and content always give the same id, so reimports are deterministic."""
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class SftExample:
    """One row of the `sft_examples` schema: prompt messages → completion (loss on the completion only)."""

    kind: str  # "ift" or "eft"
    prompt_messages: tuple[tuple[str, str], ...]  # (role, content) pairs: hashable, so duplicates are detectable
    completion: str
    source: str
    score: float | None = None  # EFT: the judge's final score; IFT: None

    @property
    def example_id(self) -> str:
        return stable_id(self.source, self.kind, self.prompt_messages, self.completion)

    def to_row(self) -> dict[str, Any]:
        return {
            "example_id": self.example_id,
            "kind": self.kind,
            "prompt_messages": [{"role": r, "content": c} for r, c in self.prompt_messages],
            "completion": self.completion,
            "source": self.source,
            "score": self.score,
        }


@dataclass(frozen=True)
class RankedResponse:
    response_id: str
    response: str
    human_rank: int  # 0 = best; equal ranks are ties


@dataclass(frozen=True)
class EvalGroup:
    """Sibling responses to one conversation, ranked by humans: one `eval_groups` row per response."""

    group_id: str
    prompt_messages: tuple[tuple[str, str], ...]
    responses: tuple[RankedResponse, ...]
    lang: str | None
    source: str

    def to_rows(self) -> list[dict[str, Any]]:
        messages = [{"role": r, "content": c} for r, c in self.prompt_messages]
        return [
            {
                "group_id": self.group_id,
                "prompt_messages": messages,
                "response_id": r.response_id,
                "response": r.response,
                "human_rank": r.human_rank,
                "lang": self.lang,
                "source": self.source,
            }
            for r in self.responses
        ]


@dataclass
class RowOutcome:
    """What one source row (a line, an array item, a Parquet row) turned into."""

    file: str
    line: int | None
    examples: list[SftExample] = field(default_factory=list)
    groups: list[EvalGroup] = field(default_factory=list)
    issue: Issue | None = None
    filtered: Counter = field(default_factory=Counter)  # rows/messages dropped on purpose, by reason


def dense_ranks(ranks: list[int]) -> list[int]:
    """Renumber ranks to 0..k-1 keeping ties: [0, 2, 2, 5] → [0, 1, 1, 2]."""
    order = {value: i for i, value in enumerate(sorted(set(ranks)))}
    return [order[value] for value in ranks]


# ---- field checks -------------------------------------------------------------------------------------------


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def require_mapping(value: Any, field_name: str | None) -> dict:
    if not isinstance(value, dict):
        raise FieldError(field_name, f"expected an object, got {type_name(value)}")
    return value


def wrapped_records(row: dict) -> FieldError | None:
    """The error for a row that is really a wrapper around the records ({"data": [{…}, …]}), or None."""
    for key, value in row.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            return FieldError(
                None,
                f"found an object whose '{key}' holds a list of {len(value)} records; expected one record per line "
                f"(JSON Lines) or a top-level JSON array of records (unwrap it, e.g. jq -c '.{key}[]')",
            )
    return None


def require_text(row: dict, key: str, *, prefix: str = "", allow_blank: bool = False) -> str:
    """A string field that must be present (and, unless allow_blank, contain more than whitespace)."""
    name = f"{prefix}{key}"
    if key not in row or row[key] is None:
        raise FieldError(name, "missing")
    value = row[key]
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type_name(value)}")
    if not allow_blank and not value.strip():
        raise FieldError(name, "empty")
    return value


def _optional(row: dict, key: str, prefix: str, kind: type, expected: Callable[[Any], str], default: Any) -> Any:
    """row[key] if it is a `kind`, `default` if absent or null; otherwise FieldError(`expected(value)`)."""
    value = row.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise FieldError(f"{prefix}{key}", expected(value))
    return value


def optional_text(row: dict, key: str, *, prefix: str = "") -> str | None:
    return _optional(row, key, prefix, str, lambda v: f"expected a string, got {type_name(v)}", None)


def optional_bool(row: dict, key: str, *, prefix: str = "", default: bool | None = None) -> bool | None:
    return _optional(row, key, prefix, bool, lambda v: f"expected true/false, got {v!r}", default)


def optional_rank(row: dict, key: str, *, prefix: str = "") -> int | None:
    """A non-negative integer or null. Float columns from pandas-written Parquet (1.0, NaN) are accepted."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise FieldError(f"{prefix}{key}", f"expected a non-negative integer or null, got {value!r}")
    return int(value)


def chat_messages(value: Any, field_name: str) -> list[tuple[str, str]]:
    """Validate a list of {role, content} chat messages."""
    if not isinstance(value, (list, tuple)):
        raise FieldError(field_name, f"expected a list of {{role, content}} messages, got {type_name(value)}")
    if not value:
        raise FieldError(field_name, "empty message list")
    messages = []
    for i, message in enumerate(value):
        where = f"{field_name}[{i}]"
        message = require_mapping(message, where)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise FieldError(f"{where}.role", f"expected one of user/assistant/system, got {role!r}")
        if role == "system" and i != 0:
            raise FieldError(f"{where}.role", "a system message may only come first")
        content = require_text(message, "content", prefix=f"{where}.")
        messages.append((role, content))
    return messages


def split_conversation(messages: list[tuple[str, str]], field_name: str) -> tuple[tuple, str]:
    """Chat messages → (prompt messages, target): the last message is the assistant answer being learned."""
    last = len(messages) - 1
    if messages[last][0] != "assistant":
        raise FieldError(
            f"{field_name}[{last}].role", f"the last message must be the assistant's answer, got {messages[last][0]!r}"
        )
    prompt = tuple(messages[:last])
    if not prompt:
        raise FieldError(field_name, "no user message before the assistant's answer")
    if prompt[-1][0] != "user":
        reason = f"the message before the assistant's answer must be the user's, got {prompt[-1][0]!r}"
        raise FieldError(f"{field_name}[{last - 1}].role", reason)
    return prompt, messages[last][1]
