"""The artifact store: URIs, atomic manifest-committed artifacts (local or S3), table schemas and run layout.

Names are re-exported lazily so that `import srlm.store.layout` or `srlm.store.uri` (DAG files, `srlm --help`)
does not import pyarrow; `from srlm.store import write_table` loads the artifacts module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it (imported on first use).
_EXPORTS = {
    name: module
    for module, names in {
        "srlm.store.artifacts": (
            "commit_shards delete_artifact exists fetch_directory is_committed list_committed read_file "
            "read_manifest read_table read_text shard_uri write_directory write_table write_text"
        ),
        "srlm.store.filesystems": "configure_store",
        "srlm.store.layout": "RunLayout",
        "srlm.store.manifest": "Manifest ManifestFile",
        "srlm.store.uri": "is_local is_s3 join_uri",
    }.items()
    for name in names.split()
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'srlm.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
