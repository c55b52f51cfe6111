"""The `eval_results` table: one committed artifact per (checkpoint, suite, suite version), one row per metric.

Whether a committed result still stands is the project's one reuse rule (srlm.steps.reuse.reuse_committed): a
result records its producer (the evaluated model's and the data's fingerprints, the suite's settings), and it is
kept only while that producer is unchanged, so an Airflow backfill can call the same evaluation for the same
checkpoint any number of times, while a retrained checkpoint gets its evaluation recomputed.
`read_run_results` gathers every committed result of a run for the monitors and the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from srlm.formatting import is_missing
from srlm.store import artifacts
from srlm.store.layout import RunLayout
from srlm.store.schemas import schema
from srlm.store.uri import join_uri

log = logging.getLogger(__name__)

# Every suite a result can be recorded under (srlm.evaluation.suites.SUITES: those the orchestration runs).
SUITES = ("reward_model", "winrate", "head2head", "monitors")
RESULT_SCHEMA = "eval_results"


@dataclass
class EvalRecord:
    """What one evaluation produced: metric values, optional per-metric counts, and free-form details."""

    metrics: Mapping[str, float | None]
    n: Mapping[str, int | None] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultTarget:
    """Where one checkpoint's results are recorded: `layout.eval_result(checkpoint, suite, suite_version)`."""

    layout: RunLayout
    checkpoint: str
    suite_version: str = "v1"
    force: bool = False

    def uri(self, suite: str) -> str:
        return self.layout.eval_result(self.checkpoint, suite, self.suite_version)


def result_producer(
    layout: RunLayout,
    checkpoint_id: str,
    suite: str,
    version: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance of one result: `inputs` (fingerprints of the evaluated model and data) and `settings` (the
    suite's parameters) are what decide, through reuse_committed, whether a committed result still stands."""
    from srlm.steps.reuse import make_producer

    return make_producer(
        "evaluate",
        dict(inputs or {}),
        {"suite": suite, "suite_version": version, **dict(settings or {})},
        run=layout.run,
        checkpoint=checkpoint_id,
    )


def committed_result(
    target: ResultTarget, suite: str, producer: Mapping[str, Any], *, echo: Callable[[str], None] | None = None
) -> str | None:
    """The URI of a committed result made by `producer` (so nothing needs doing), or None: compute it (again).

    A result made by another producer (a retrained checkpoint, other data or settings) is to be recomputed;
    reuse_committed says why in one line, and record_result then commits the new result over it.
    """
    from srlm.steps.reuse import reuse_committed

    uri = target.uri(suite)
    manifest = reuse_committed(
        uri, dict(producer), force=target.force, what=f"evaluate {target.checkpoint} {suite}", echo=echo
    )
    return None if manifest is None else uri


def record_result(target: ResultTarget, suite: str, record: EvalRecord, producer: Mapping[str, Any]) -> str:
    """Commit `record` as the target's `suite` result, replacing a stale or forced one.

    Unless forced, a result that the same producer committed while this one was computed (`srlm eval` and the
    evaluate DAG on the same checkpoint at once) is not replaced: the store keeps the first and this call returns
    its URI. Only a result of another producer, the stale one the computation was for, is replaced.
    """
    from srlm.steps.reuse import check_committed

    verdict = check_committed(target.uri(suite), dict(producer))
    current = verdict.reusable and not target.force
    replaces = None if current or verdict.manifest is None else verdict.manifest.sha256
    return write_eval_results(
        target.layout,
        target.checkpoint,
        suite,
        target.suite_version,
        record,
        force=True,
        producer=dict(producer),
        replaces=replaces,
    )


def results_table(checkpoint_id: str, suite: str, version: str, record: EvalRecord) -> pa.Table:
    now = datetime.now(timezone.utc)
    details = json.dumps(dict(record.details), ensure_ascii=False, default=_json_default) if record.details else None
    rows = [
        {
            "checkpoint_id": checkpoint_id,
            "suite": suite,
            "suite_version": version,
            "metric": name,
            "value": None if is_missing(value) else float(value),
            "n": record.n.get(name),
            "details_json": details,
            "created_at": now,
        }
        for name, value in record.metrics.items()
    ]
    return pa.Table.from_pylist(rows, schema=schema(RESULT_SCHEMA))


def write_eval_results(
    layout: RunLayout,
    checkpoint_id: str,
    suite: str,
    version: str,
    record: EvalRecord,
    *,
    force: bool = False,
    producer: Any = None,
    **commit: Any,
) -> str:
    """Commit `record` at layout.eval_result(checkpoint_id, suite, version); a committed one is kept unless force.
    `commit` passes on to artifacts.write_table (its `replaces`)."""
    uri = layout.eval_result(checkpoint_id, suite, version)
    table = results_table(checkpoint_id, suite, version, record)
    artifacts.write_table(uri, table, RESULT_SCHEMA, producer=producer, force=force, **commit)
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
    """Compute and commit a result unless one made by the same producer is committed; returns (uri, computed).

    `producer` defaults to result_producer(...) without inputs or settings: then only `force` recomputes.
    """
    target = ResultTarget(layout, checkpoint_id, version, force)
    if producer is None:
        producer = result_producer(layout, checkpoint_id, suite, version)
    committed = committed_result(target, suite, producer)
    if committed is not None:
        log.info("%s: already committed; not recomputed", committed)
        return committed, False
    return record_result(target, suite, compute(), producer), True


def read_run_results(layout: RunLayout) -> pa.Table:
    """Every committed eval_results row of the run (all checkpoints, suites and versions)."""
    tables = []
    eval_root = join_uri(layout.run_uri, "eval")
    for checkpoint in child_names(eval_root):
        for suite in child_names(join_uri(eval_root, checkpoint)):
            for uri in artifacts.list_committed(join_uri(eval_root, checkpoint, suite)):
                manifest = artifacts.read_manifest(uri)
                if manifest.kind == "table" and manifest.schema_name == RESULT_SCHEMA:
                    tables.append(artifacts.read_table(uri, RESULT_SCHEMA))
    if not tables:
        return schema(RESULT_SCHEMA).empty_table()
    return pa.concat_tables(tables)


def results_by_checkpoint(table: pa.Table) -> dict[str, dict[str, dict[str, float | None]]]:
    """{checkpoint: {suite: {metric: value}}}; for several versions of a suite the newest row wins."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    rows = sorted(table.to_pylist(), key=lambda r: r["created_at"])
    for row in rows:
        out.setdefault(row["checkpoint_id"], {}).setdefault(row["suite"], {})[row["metric"]] = row["value"]
    return out


def child_names(uri: str) -> list[str]:
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
