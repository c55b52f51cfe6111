"""The _SUCCESS manifest that commits an artifact: what it holds, how much, and who produced it.

Paths in a manifest are relative to the artifact URI, so a committed artifact can be copied between stores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from srlm.errors import StoreError

MANIFEST_NAME = "_SUCCESS"
MANIFEST_FORMAT = 1
KINDS = ("table", "directory")


@dataclass(frozen=True)
class ManifestFile:
    path: str  # relative to the artifact URI
    bytes: int
    sha256: str
    rows: int | None = None  # tables only


@dataclass(frozen=True)
class Manifest:
    """A committed artifact's manifest.

    kind is "table" (Parquet files of `schema_name` at `schema_version`) or "directory" (arbitrary files, e.g. a
    Hugging Face checkpoint; `schema_name` then names the content, e.g. "checkpoint", and schema_version is None).
    """

    kind: str
    schema_name: str
    schema_version: int | None
    files: tuple[ManifestFile, ...]
    created_at: str  # ISO 8601, UTC
    producer: dict[str, Any]
    attempt_id: str | None = None  # None for commit_shards parents, whose files live in the shards
    total_rows: int | None = None
    format: int = MANIFEST_FORMAT
    # Set when read from a store; not part of the manifest's content.
    uri: str | None = field(default=None, compare=False)
    sha256: str | None = field(default=None, compare=False)  # of the manifest bytes: the artifact's identity

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data.pop("uri")
        data.pop("sha256")
        return json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, uri: str) -> Manifest:
        raw = text.encode() if isinstance(text, str) else text
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("format", 0) > MANIFEST_FORMAT:
                raise StoreError(
                    f"{uri}/{MANIFEST_NAME}: manifest format {data['format']} is newer than this srlm understands "
                    f"({MANIFEST_FORMAT}); upgrade srlm"
                )
            files = tuple(ManifestFile(**f) for f in data.pop("files"))
            known = {f.name for f in dataclasses.fields(cls)} - {"uri", "sha256", "files"}
            manifest = cls(
                files=files, **{k: v for k, v in data.items() if k in known}, uri=uri, sha256=_sha256(raw)
            )
        except StoreError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"{uri}/{MANIFEST_NAME}: unreadable manifest ({exc})") from None
        if manifest.kind not in KINDS:
            raise StoreError(f"{uri}/{MANIFEST_NAME}: unknown artifact kind {manifest.kind!r}")
        return manifest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
