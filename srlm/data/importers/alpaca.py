"""`--format alpaca`: Stanford Alpaca records {instruction, input, output}, as a JSON array or JSON Lines.

A non-blank `input` is appended to the instruction after a blank line, the way Alpaca's own prompt shows it.
Every record is IFT.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from srlm.data.importers.options import ReadOptions
from srlm.data.importers.records import (
    RowOutcome,
    SftExample,
    optional_text,
    require_mapping,
    require_text,
    wrapped_records,
)
from srlm.data.importers.sources import iter_json_documents, sft_outcomes, source_name

NAME = "alpaca"
SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def alpaca_record_to_example(value: Any, source: str) -> SftExample:
    row = require_mapping(value, None)
    if "instruction" not in row and (wrapper := wrapped_records(row)):
        raise wrapper
    instruction = require_text(row, "instruction")
    extra = optional_text(row, "input")
    output = require_text(row, "output")
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return SftExample(kind="ift", prompt_messages=(("user", prompt),), completion=output, source=source)


def read(path: Path, options: ReadOptions) -> Iterator[RowOutcome]:
    source = source_name(NAME, path)
    return sft_outcomes(iter_json_documents(path), lambda value: alpaca_record_to_example(value, source))
