"""Read pairwise annotations in AlpacaEval's layout into per-model sets.

Accepted sources: a JSON list (`.json`, `.json.gz`), JSON lines (`.jsonl`, `.jsonl.gz`), a Parquet file, a store
URI of a committed `annotations` table, or a local directory holding any of those. A record needs `instruction`,
`output_1` (the baseline), `output_2` (the model) and `preference` in [1, 2] (2 = model preferred, 1.5 = tie,
null = the annotator gave no preference; AlpacaEval's legacy 0 also means a tie). `generator_1` / `generator_2`
name the baseline and the model; a source holding several `generator_2` values yields one set per model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srlm.data.importers.records import wrapped_records
from srlm.errors import DataError
from srlm.evaluation.sources import JSON_SUFFIXES, PARQUET_SUFFIXES, local_file_path, read_record_file

REQUIRED_FIELDS = ("instruction", "output_1", "output_2")


@dataclass
class AnnotationSet:
    """One model's annotations against one baseline; lengths are in characters (Unicode code points)."""

    model: str
    baseline: str | None
    source: str
    instructions: list[str]
    output_1_chars: np.ndarray  # int64, the baseline's response lengths
    output_2_chars: np.ndarray  # int64, the model's response lengths
    preferences: np.ndarray  # float64 in [1, 2]; NaN where the annotator gave none
    same_outputs: np.ndarray = field(default=None)  # bool: output_1 == output_2 (a system against itself)

    def __len__(self) -> int:
        return len(self.instructions)

    @property
    def is_self_comparison(self) -> bool:
        """The baseline judged against itself: its win rate is 50% by construction (AlpacaEval's convention)."""
        if self.baseline is not None and self.model == self.baseline:
            return True
        return bool(len(self) and self.same_outputs is not None and self.same_outputs.all())


def load_annotation_sets(source: str | Path) -> list[AnnotationSet]:
    """All annotation sets in a file, a committed store table, or a local directory of such files."""
    path = local_file_path(source)
    if path is None:
        return _sets_from_store(str(source))
    if path.is_dir():
        if (path / "_SUCCESS").exists():
            return _sets_from_store(str(path))
        found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES))
        found += sorted(p for p in path.iterdir() if p.is_dir() and (p / "_SUCCESS").exists())
        if not found:
            raise DataError(f"{path}: no annotation files (*.json, *.json.gz, *.jsonl, *.parquet) in this directory")
        return [s for p in found for s in load_annotation_sets(p)]
    if not path.exists():
        raise DataError(f"{path}: annotations not found")
    if path.name.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES):
        return sets_from_records(read_record_file(path), str(path))
    raise DataError(f"{path}: unknown annotation format (expected .json, .json.gz, .jsonl[.gz], .parquet or a store URI)")


def load_many(sources: Iterable[str | Path]) -> list[AnnotationSet]:
    return [s for src in sources for s in load_annotation_sets(src)]


def sibling_annotation_sets(source: str | Path) -> list[AnnotationSet]:
    """The other annotation sets stored next to `source` (same directory, or same store prefix).

    AlpacaEval keeps one annotation file per model side by side; those files are what instruction difficulty is
    estimated from. A sibling that cannot be read is skipped with a warning: it is optional context, unlike the
    sets asked for.
    """
    import logging

    log = logging.getLogger(__name__)
    text = str(source).rstrip("/")
    path = local_file_path(text)
    if path is None:
        from srlm.store import artifacts

        parent = text.rsplit("/", 1)[0]
        candidates: list[str | Path] = [u for u in artifacts.list_committed(parent) if u.rstrip("/") != text]
    else:
        if path.is_dir() and not (path / "_SUCCESS").exists():
            return []  # a directory is already loaded whole
        parent = path.parent
        candidates = sorted(
            p
            for p in parent.iterdir()
            if p != path
            and ((p.is_file() and p.name.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES)) or (p / "_SUCCESS").exists())
        )
    found = []
    for candidate in candidates:
        try:
            found.extend(load_annotation_sets(candidate))
        except Exception as exc:  # noqa: BLE001 - optional context; the reason is logged
            log.warning("not using %s for instruction difficulty: %s", candidate, exc)
    return found


def sets_from_records(records: Sequence[dict[str, Any]], source: str) -> list[AnnotationSet]:
    """Validate records and split them into one set per (generator_2, generator_1)."""
    if not records:
        raise DataError(f"{source}: no annotation records")
    groups: dict[tuple[str, str | None], list[tuple[int, dict[str, Any]]]] = {}
    default_model = _stem(source)
    for index, record in enumerate(records):
        where = f"{source}: record {index}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        if "instruction" not in record and (wrapper := wrapped_records(record)):
            raise DataError(f"{where}: {wrapper.reason}")
        for name in REQUIRED_FIELDS:
            if not isinstance(record.get(name), str):
                raise DataError(f"{where}: field {name!r} must be a string, got {record.get(name)!r:.60}")
        model = record.get("generator_2") or default_model
        baseline = record.get("generator_1") or None
        groups.setdefault((str(model), baseline), []).append((index, record))
    return [_build_set(model, baseline, rows, source) for (model, baseline), rows in groups.items()]


def preference_value(raw: Any, where: str) -> float:
    """A preference as a float in [1, 2], NaN for none; AlpacaEval's legacy 0 (tie) becomes 1.5."""
    if raw is None:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        try:
            raw = float(raw)  # some exports carry numbers as strings
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: field 'preference' must be a number in [1, 2] or null, got {raw!r}") from exc
    value = float(raw)
    if math.isnan(value):
        return math.nan
    if value == 0.0:
        return 1.5
    if not 1.0 <= value <= 2.0:
        raise DataError(f"{where}: field 'preference' must be in [1, 2] (or 0 / null), got {value!r}")
    return value


def _build_set(model: str, baseline: str | None, rows: list[tuple[int, dict[str, Any]]], source: str) -> AnnotationSet:
    prefs = np.array([preference_value(r.get("preference"), f"{source}: record {i}") for i, r in rows], dtype=float)
    return AnnotationSet(
        model=model,
        baseline=baseline,
        source=source,
        instructions=[r["instruction"] for _, r in rows],
        output_1_chars=np.array([len(r["output_1"]) for _, r in rows], dtype=np.int64),
        output_2_chars=np.array([len(r["output_2"]) for _, r in rows], dtype=np.int64),
        preferences=prefs,
        same_outputs=np.array([r["output_1"] == r["output_2"] for _, r in rows], dtype=bool),
    )


def _sets_from_store(uri: str) -> list[AnnotationSet]:
    from srlm.store import artifacts

    table = artifacts.read_table(uri, "annotations")
    return sets_from_records(table.to_pylist(), uri)


def _stem(source: str) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".json.gz", ".jsonl.gz", ".json", ".jsonl", ".parquet"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
