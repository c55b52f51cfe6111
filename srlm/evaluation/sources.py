"""Where evaluation inputs named on the command line are, and how their record files are read.

An input is a local path (or file:// URI) or a store URI; a local record file is Parquet or JSON (a JSON array
document or JSON Lines, gzip or not, read by srlm's one JSON records reader).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srlm.store.uri import FILE_SCHEME, is_local

PARQUET_SUFFIXES = (".parquet",)
JSON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def local_file_path(source: str | Path) -> Path | None:
    """The local path a source names (a plain path or file:// URI), or None for a store or other remote URI."""
    text = str(source)
    if not is_local(text):
        return None
    return Path(text.removeprefix(FILE_SCHEME)).expanduser()


def read_record_file(path: Path) -> list[Any]:
    """Every record of a local Parquet or JSON(L) file, in file order; DataError names the file and line."""
    if path.name.endswith(PARQUET_SUFFIXES):
        from srlm.data.importers.sources import iter_parquet_rows

        return [row.value for row in iter_parquet_rows(path)]
    from srlm.data.importers.sources import read_json_records

    return read_json_records(path)
