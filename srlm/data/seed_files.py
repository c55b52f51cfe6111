"""Where the shipped seed files are, and how a seed-format JSON Lines file is read and checked.

Both files are JSON Lines package data under srlm/data/seed/. `ift.jsonl` holds one instruction per line with
its answer (`id`, `category`, `topic`, `prompt`, `response`, optionally `factual_error`, which the EFT builder
uses to make a wrong-but-on-topic variant). `eft.jsonl` is written by `python -m srlm.data.eft_builder` from the
IFT rows; each line is a judge prompt and its target judgment (`response`: justification, then `Score: N`).

The lowest layer of the seed data: the EFT builder (srlm.data.eft_builder) reads IFT rows through it, and the
tables srlm trains on (srlm.data.seed_data) are built on both.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from srlm.data.importers.sources import iter_json_lines
from srlm.errors import DataError

SEED_PACKAGE = "srlm.data"
SEED_DIR = "seed"
IFT_FILE = "ift.jsonl"
EFT_FILE = "eft.jsonl"

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


def _read_rows(
    path: str | Path, kind: str, fields: tuple[str, ...], check: Callable[[dict[str, Any], str], None]
) -> list[dict[str, Any]]:
    """The rows of a seed-format JSON Lines file: each an object with non-empty text `fields`, passing `check`,
    with a unique `id`; the first bad row raises DataError naming file, line and field."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for source_row in iter_json_lines(path):
        if source_row.issue is not None:
            raise DataError(source_row.issue.message())
        line = source_row.line or 0
        where = f"{path}:{line}"
        row = _check_text_fields(source_row.value, fields, where)
        check(row, where)
        if row["id"] in seen:
            raise DataError(f"{where}: field 'id': {row['id']!r} already used on line {seen[row['id']]}")
        seen[row["id"]] = line
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no {kind} rows")
    return rows


def read_ift_rows(path: str | Path) -> list[dict[str, Any]]:
    """IFT rows of a seed-format JSON Lines file, validated; errors name file, line and field."""
    return _read_rows(path, "IFT", IFT_FIELDS, _check_factual_error)


def read_eft_rows(path: str | Path) -> list[dict[str, Any]]:
    """EFT rows of a seed-format JSON Lines file (as eft_builder writes them), validated."""
    return _read_rows(path, "EFT", EFT_FIELDS, _check_eft)
