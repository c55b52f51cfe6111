"""The artifact store: URIs, atomic manifest-committed artifacts (local or S3), table schemas and run layout.

Names are re-exported lazily so that `import srlm.store.layout` or `srlm.store.uri` (DAG files, `srlm --help`)
does not import pyarrow; `from srlm.store import write_table` loads the artifacts module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Manifest": "srlm.store.manifest",
    "ManifestFile": "srlm.store.manifest",
    "RunLayout": "srlm.store.layout",
    "commit_shards": "srlm.store.artifacts",
    "configure_store": "srlm.store.filesystems",
    "delete_artifact": "srlm.store.artifacts",
    "exists": "srlm.store.artifacts",
    "fetch_directory": "srlm.store.artifacts",
    "is_committed": "srlm.store.artifacts",
    "is_local": "srlm.store.uri",
    "is_s3": "srlm.store.uri",
    "join_uri": "srlm.store.uri",
    "list_committed": "srlm.store.artifacts",
    "read_manifest": "srlm.store.artifacts",
    "read_table": "srlm.store.artifacts",
    "read_text": "srlm.store.artifacts",
    "shard_uri": "srlm.store.artifacts",
    "write_directory": "srlm.store.artifacts",
    "write_table": "srlm.store.artifacts",
    "write_text": "srlm.store.artifacts",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from srlm.store.artifacts import (
        commit_shards,
        delete_artifact,
        exists,
        fetch_directory,
        is_committed,
        list_committed,
        read_manifest,
        read_table,
        read_text,
        shard_uri,
        write_directory,
        write_table,
        write_text,
    )
    from srlm.store.filesystems import configure_store
    from srlm.store.layout import RunLayout
    from srlm.store.manifest import Manifest, ManifestFile
    from srlm.store.uri import is_local, is_s3, join_uri


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'srlm.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
