"""Importers: one module per input format, each `read(path, options) -> Iterator[RowOutcome]`.

records.py holds what they produce (SftExample, EvalGroup, Issue) and the shared field checks; sources.py reads
files row by row with line numbers; import_job.py (one level up) drives a whole import and writes the artifacts.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from srlm.errors import ConfigError

FORMATS = ("jsonl", "parquet", "alpaca", "oasst")


def importer(format_name: str) -> ModuleType:
    """The module implementing a format (it has NAME, SUFFIXES and read)."""
    if format_name not in FORMATS:
        raise ConfigError(f"unknown import format {format_name!r}; known: {', '.join(FORMATS)}")
    return importlib.import_module(f"srlm.data.importers.{format_name}")
