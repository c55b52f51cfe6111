"""`--format parquet`: chat-style SFT rows in a Parquet file (or a directory of them); see chat.py.

`messages` / `prompt_messages` may be list<struct<role, content>> columns or lists of dicts; the 1-based row
number stands in for the line in error messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from srlm.data.importers.chat import chat_row_to_example
from srlm.data.importers.options import ReadOptions
from srlm.data.importers.records import RowOutcome
from srlm.data.importers.sources import iter_parquet_rows, sft_outcomes, source_name

NAME = "parquet"
SUFFIXES = (".parquet",)


def read(path: Path, options: ReadOptions) -> Iterator[RowOutcome]:
    source = source_name(NAME, path)
    return sft_outcomes(iter_parquet_rows(path), lambda value: chat_row_to_example(value, source, options))
