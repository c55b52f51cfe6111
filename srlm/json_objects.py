"""Dataclasses read from JSON objects (job specs handed between processes): one rule for what a spec may hold.

An unknown key is an error naming the source and listing the valid keys, so a typo in a hand-written or stale spec
fails at once instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from srlm.errors import ConfigError


def load_json_object(text: str, source: str) -> dict[str, Any]:
    """The JSON object in `text`; ConfigError naming `source` (and line and column) if it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    return check_fields(data, None, source)


def check_fields(data: Any, cls: type | None, source: str) -> dict[str, Any]:
    """`data` itself, once it is a JSON object whose keys are all fields of the dataclass `cls` (any keys if None)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if cls is not None:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
    return data
