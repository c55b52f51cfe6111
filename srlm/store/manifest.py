"""The _SUCCESS manifest that commits an artifact: what it holds, how much, and who produced it.

Paths in a manifest are relative to the artifact URI, so a committed artifact can be copied between stores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from srlm.errors import StoreError
from srlm.version import code_version

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

    @classmethod
    def new_table(
        cls,
        schema_name: str,
        schema_version: int,
        files: Iterable[ManifestFile],
        *,
        producer: Any,
        attempt_id: str | None,
    ) -> Manifest:
        """The manifest that commits Parquet `files` of one table schema, created now; total_rows is their sum."""
        files = tuple(files)
        return cls(
            kind="table",
            schema_name=schema_name,
            schema_version=schema_version,
            files=files,
            created_at=utc_timestamp(),
            producer=producer_record(producer),
            attempt_id=attempt_id,
            total_rows=sum(f.rows or 0 for f in files),
        )

    @classmethod
    def new_directory(
        cls, content_kind: str, files: Iterable[ManifestFile], *, producer: Any, attempt_id: str
    ) -> Manifest:
        """The manifest that commits a directory of arbitrary files (`content_kind`: e.g. "checkpoint")."""
        return cls(
            kind="directory",
            schema_name=content_kind,
            schema_version=None,
            files=tuple(files),
            created_at=utc_timestamp(),
            producer=producer_record(producer),
            attempt_id=attempt_id,
        )

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
            manifest = cls(files=files, **{k: v for k, v in data.items() if k in known}, uri=uri, sha256=_sha256(raw))
        except StoreError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"{uri}/{MANIFEST_NAME}: unreadable manifest ({exc})") from exc
        if manifest.kind not in KINDS:
            raise StoreError(f"{uri}/{MANIFEST_NAME}: unknown artifact kind {manifest.kind!r}")
        return manifest


def producer_record(producer: Any) -> dict[str, Any]:
    """What a manifest records as its producer: {"config": …, "code_version": …} plus any other keys a mapping
    producer carries. `producer` is None, a config (to_dict(), a pydantic model or a dataclass) or a mapping."""
    if producer is None:
        out: dict[str, Any] = {"config": None}
    elif hasattr(producer, "to_dict"):
        out = {"config": producer.to_dict()}
    elif hasattr(producer, "model_dump"):
        out = {"config": producer.model_dump(mode="json")}
    elif dataclasses.is_dataclass(producer) and not isinstance(producer, type):
        out = {"config": dataclasses.asdict(producer)}
    elif isinstance(producer, Mapping):
        out = dict(producer)
        out.setdefault("config", None)
    else:
        raise StoreError(f"producer must be a config or a mapping, got {type(producer).__name__}")
    out.setdefault("code_version", code_version())
    return out


def utc_timestamp() -> str:
    """Now, as a manifest records it: ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
