"""The `eval_results` table: one committed artifact per (checkpoint, suite, suite version), one row per metric.

Writing is idempotent: a committed result is kept (and, through `record_once`, not even recomputed) unless
force=True, so an Airflow backfill can call the same evaluation for the same checkpoint any number of times.
`read_run_results` gathers every committed result of a run for the monitors and the report.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import pyarrow as pa

from srlm.store import artifacts
from srlm.store.layout import RunLayout
from srlm.store.schemas import schema
from srlm.store.uri import join_uri

log = logging.getLogger(__name__)

SUITES = ("reward_model", "winrate", "head2head", "monitors")


@dataclass
class EvalRecord:
    """What one evaluation produced: metric values, optional per-metric counts, and free-form details."""

    metrics: Mapping[str, float | None]
    n: Mapping[str, int | None] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


def results_table(checkpoint_id: str, suite: str, version: str, record: EvalRecord) -> pa.Table:
    now = datetime.now(timezone.utc)
    details = json.dumps(dict(record.details), ensure_ascii=False, default=_json_default) if record.details else None
    rows = [
        {
            "checkpoint_id": checkpoint_id,
            "suite": suite,
            "suite_version": version,
            "metric": name,
            "value": None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
            "n": record.n.get(name),
            "details_json": details,
            "created_at": now,
        }
        for name, value in record.metrics.items()
    ]
    return pa.Table.from_pylist(rows, schema=schema("eval_results"))


def write_eval_results(
    layout: RunLayout,
    checkpoint_id: str,
    suite: str,
    version: str,
    record: EvalRecord,
    *,
    force: bool = False,
    producer: Any = None,
) -> str:
    """Commit `record` at layout.eval_result(checkpoint_id, suite, version); a committed one is kept unless force."""
    uri = layout.eval_result(checkpoint_id, suite, version)
    artifacts.write_table(uri, results_table(checkpoint_id, suite, version, record), "eval_results", producer=producer, force=force)
    return uri


def record_once(
    layout: RunLayout,
    checkpoint_id: str,
    suite: str,
    version: str,
    compute: Callable[[], EvalRecord],
    *,
    force: bool = False,
    producer: Any = None,
) -> tuple[str, bool]:
    """Compute and commit a result only if it is not committed yet (or force); returns (uri, computed)."""
    uri = layout.eval_result(checkpoint_id, suite, version)
    if not force and artifacts.is_committed(uri):
        log.info("%s: already committed; not recomputed", uri)
        return uri, False
    return write_eval_results(layout, checkpoint_id, suite, version, compute(), force=force, producer=producer), True


def read_run_results(layout: RunLayout) -> pa.Table:
    """Every committed eval_results row of the run (all checkpoints, suites and versions)."""
    tables = []
    eval_root = join_uri(layout.run_uri, "eval")
    for checkpoint in _child_names(eval_root):
        for suite in _child_names(join_uri(eval_root, checkpoint)):
            for uri in artifacts.list_committed(join_uri(eval_root, checkpoint, suite)):
                manifest = artifacts.read_manifest(uri)
                if manifest.kind == "table" and manifest.schema_name == "eval_results":
                    tables.append(artifacts.read_table(uri, "eval_results"))
    if not tables:
        return schema("eval_results").empty_table()
    return pa.concat_tables(tables)


def results_by_checkpoint(table: pa.Table) -> dict[str, dict[str, dict[str, float | None]]]:
    """{checkpoint: {suite: {metric: value}}}; for several versions of a suite the newest row wins."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    rows = sorted(table.to_pylist(), key=lambda r: r["created_at"])
    for row in rows:
        out.setdefault(row["checkpoint_id"], {}).setdefault(row["suite"], {})[row["metric"]] = row["value"]
    return out


def _child_names(uri: str) -> list[str]:
    """Names of the sub-directories of a store prefix (plain prefixes, not only committed artifacts)."""
    import pyarrow.fs as pafs

    from srlm.store.filesystems import filesystem_for

    fs, path = filesystem_for(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    except (OSError, pa.ArrowException):
        return []
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and not i.base_name.startswith("_"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
