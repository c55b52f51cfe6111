"""`--format jsonl`: chat-style SFT rows in JSON Lines (.jsonl, or gzip-compressed .jsonl.gz); see chat.py.

A file holding one JSON array of rows is read too, since exporters often write that instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from srlm.data.importers.chat import chat_row_to_example
from srlm.data.importers.options import ReadOptions
from srlm.data.importers.records import RowOutcome
from srlm.data.importers.sources import iter_json_documents, sft_outcomes, source_name

NAME = "jsonl"
SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz")


def read(path: Path, options: ReadOptions) -> Iterator[RowOutcome]:
    source = source_name(NAME, path)
    return sft_outcomes(iter_json_documents(path), lambda value: chat_row_to_example(value, source, options))
