"""A cache of judge outputs, so a rerun of an evaluation never pays for the same judgment twice.

One small JSON object per judgment under a store prefix (a local directory or s3://…), named by the sha256 of
(judge identity, full prompt, decoding settings): the prompt already holds the instruction, both outputs and
their order, so equal keys mean equal requests. Each object is written atomically (srlm.store.artifacts
.write_text), which makes the cache safe for concurrent writers: two writers of one key write the same value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from srlm.errors import StoreError
from srlm.store import artifacts
from srlm.store.uri import join_uri

log = logging.getLogger(__name__)


def default_cache_uri() -> str:
    root = os.environ.get("SRLM_CACHE_DIR") or str(Path("~/.cache/srlm").expanduser())
    return str(Path(root) / "judgments")


def judgment_key(judge_identity: str, prompt: str, settings: dict[str, Any]) -> str:
    payload = json.dumps({"judge": judge_identity, "prompt": prompt, "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgmentCache:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.hits = 0
        self.misses = 0

    def _object(self, key: str) -> str:
        return join_uri(self.uri, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        uri = self._object(key)
        try:
            if not artifacts.exists(uri):
                self.misses += 1
                return None
            text = json.loads(artifacts.read_text(uri))["text"]
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            # A damaged entry is a miss (it gets rewritten), never a wrong judgment.
            log.warning("judgment cache entry %s unreadable (%s); judging again", uri, exc)
            self.misses += 1
            return None
        self.hits += 1
        return text

    def put(self, key: str, text: str, meta: dict[str, Any] | None = None) -> None:
        artifacts.write_text(self._object(key), json.dumps({"text": text, **(meta or {})}, ensure_ascii=False))
