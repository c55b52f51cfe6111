"""The seed data srlm ships: hand-written IFT examples and the EFT set built from them (see seed/README.md).

Both files are JSON Lines package data under srlm/data/seed/. `ift.jsonl` holds one instruction per line with
its answer (`id`, `category`, `topic`, `prompt`, `response`, optionally `factual_error`, which the EFT builder
uses to make a wrong-but-on-topic variant). `eft.jsonl` is written by `python -m srlm.data.eft_builder` from the
IFT rows; each line is a judge prompt and its target judgment (`response`: justification, then `Score: N`).

The tables come back in the `sft_examples` schema, the form seed SFT trains on.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from srlm.data.importers.sources import iter_json_lines
from srlm.errors import ConfigError, DataError
from srlm.store.schemas import schema

SEED_PACKAGE = "srlm.data"
SEED_DIR = "seed"
IFT_FILE = "ift.jsonl"
EFT_FILE = "eft.jsonl"
SOURCE = "srlm-seed"
EFT_SPLITS = ("train", "eval", "all")

IFT_FIELDS = ("id", "category", "topic", "prompt", "response")
EFT_FIELDS = ("id", "source_ift_id", "degradation", "split", "instruction", "candidate", "prompt", "response")


def seed_path(name: str) -> Path:
    """Filesystem path of a shipped seed file (package data is installed as plain files, never zipped)."""
    return Path(str(resources.files(SEED_PACKAGE).joinpath(SEED_DIR, name)))


def _check_text_fields(row: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name in fields:
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: field '{name}': missing or not a non-empty string")
    return row


def _check_factual_error(row: dict[str, Any], where: str) -> None:
    error = row.get("factual_error")
    if error is None:
        return
    if not isinstance(error, dict):
        raise DataError(f"{where}: field 'factual_error': expected an object with 'find' and 'replace'")
    for name in ("find", "replace"):
        if not isinstance(error.get(name), str) or not error[name].strip():
            raise DataError(f"{where}: field 'factual_error.{name}': missing or not a non-empty string")
    if error["find"] not in row["response"]:
        raise DataError(f"{where}: field 'factual_error.find': text {error['find']!r} does not occur in 'response'")
    if error["find"] == error["replace"]:
        raise DataError(f"{where}: field 'factual_error.replace': identical to 'find'")


def _check_eft(row: dict[str, Any], where: str) -> None:
    score = row.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 5:
        raise DataError(f"{where}: field 'score': expected an integer in [0, 5], got {score!r}")
    if row["split"] not in ("train", "eval"):
        raise DataError(f"{where}: field 'split': expected 'train' or 'eval', got {row['split']!r}")


def _iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    for source_row in iter_json_lines(path):
        if source_row.issue is not None:
            raise DataError(source_row.issue.message())
        yield source_row.line or 0, source_row.value


def read_ift_rows(path: str | Path) -> list[dict[str, Any]]:
    """IFT rows of a seed-format JSON Lines file, validated; errors name file, line and field."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, value in _iter_rows(path):
        where = f"{path}:{line}"
        row = _check_text_fields(value, IFT_FIELDS, where)
        _check_factual_error(row, where)
        if row["id"] in seen:
            raise DataError(f"{where}: field 'id': {row['id']!r} already used on line {seen[row['id']]}")
        seen[row["id"]] = line
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no IFT rows")
    return rows


def read_eft_rows(path: str | Path) -> list[dict[str, Any]]:
    """EFT rows of a seed-format JSON Lines file (as eft_builder writes them), validated."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, value in _iter_rows(path):
        where = f"{path}:{line}"
        row = _check_text_fields(value, EFT_FIELDS, where)
        _check_eft(row, where)
        if row["id"] in seen:
            raise DataError(f"{where}: field 'id': {row['id']!r} already used on line {seen[row['id']]}")
        seen[row["id"]] = line
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no EFT rows")
    return rows


def shipped_ift_rows() -> list[dict[str, Any]]:
    return read_ift_rows(seed_path(IFT_FILE))


def shipped_eft_rows() -> list[dict[str, Any]]:
    return read_eft_rows(seed_path(EFT_FILE))


def _sft_table(rows: list[dict[str, Any]], kind: str) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "example_id": row["id"],
                "kind": kind,
                "prompt_messages": [{"role": "user", "content": row["prompt"]}],
                "completion": row["response"],
                "source": SOURCE,
                "score": float(row["score"]) if kind == "eft" else None,
            }
            for row in rows
        ],
        schema=schema("sft_examples"),
    )


def shipped_ift_table() -> pa.Table:
    """The shipped IFT examples as an `sft_examples` table (kind "ift", score null)."""
    return _sft_table(shipped_ift_rows(), "ift")


def shipped_eft_table(split: str = "train", per_prompt: int | None = None) -> pa.Table:
    """The shipped EFT examples of one split ("train", "eval", or "all") as an `sft_examples` table.

    The eval split holds every EFT example built from about 10% of the IFT prompts, so judge agreement can be
    measured on judgments the model was never trained to give. `per_prompt` (1-6) rebuilds the set with that
    many judged candidates per instruction instead of reading eft.jsonl: a smaller, equally balanced set for
    CPU-sized runs.
    """
    from srlm.data.eft_builder import DEFAULT_PER_PROMPT, build_eft

    if split not in EFT_SPLITS:
        raise ConfigError(f"EFT split must be one of {', '.join(EFT_SPLITS)}, got {split!r}")
    if per_prompt is None or per_prompt == DEFAULT_PER_PROMPT:
        rows = shipped_eft_rows()
    else:
        rows = build_eft(shipped_ift_rows(), per_prompt=per_prompt)
    if split != "all":
        rows = [row for row in rows if row["split"] == split]
    return _sft_table(rows, "eft")


def seed_prompts() -> list[str]:
    """The shipped IFT instructions, in file order: the seed pool for self-instruct prompt generation."""
    return [row["prompt"] for row in shipped_ift_rows()]
