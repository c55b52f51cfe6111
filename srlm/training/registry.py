"""The checkpoint registry of a run: one committed single-row `checkpoints` table per checkpoint, at
RunLayout.registry_entry(checkpoint_id). One artifact per checkpoint keeps registration atomic and idempotent
without a shared table that concurrent writers would have to merge."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from srlm.errors import StoreError
from srlm.store.layout import RunLayout

TRAINING_KINDS = ("sft", "dpo")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CheckpointRecord:
    """One registry row. Attribute access (record.uri) and, for code written against dicts, record["uri"]."""

    checkpoint_id: str
    run: str
    iteration: int
    uri: str
    parent_id: str | None
    training: str
    step: int | None
    final: bool
    data_uri: str | None
    created_at: datetime
    config_json: str | None
    # How it was trained (srlm.training.launch.training_details: backend, world size, nodes, precision, sharding,
    # resumed-from step; checkpoint selection's record under "selection"). None for entries registered before it.
    details_json: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json) if self.config_json else {}

    @property
    def details(self) -> dict[str, Any]:
        return json.loads(self.details_json) if self.details_json else {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def register_checkpoint(
    layout: RunLayout,
    checkpoint_id: str,
    iteration: int,
    uri: str,
    parent_id: str | None,
    training: str,
    step: int | None,
    final: bool,
    data_uri: str | None,
    config: dict[str, Any] | None,
    *,
    details: dict[str, Any] | None = None,
    force: bool = False,
) -> CheckpointRecord:
    """Register a committed checkpoint artifact. Registering an id again returns the existing record unchanged
    (the first registration wins) unless `force`, which replaces it (a retrained checkpoint)."""
    from srlm.store import is_committed, write_table

    check_checkpoint_id(checkpoint_id)
    if training not in TRAINING_KINDS:
        raise StoreError(
            f"checkpoint {checkpoint_id}: training must be one of {', '.join(TRAINING_KINDS)}, got {training!r}"
        )
    if not is_committed(uri):
        raise StoreError(f"checkpoint {checkpoint_id}: {uri} is not a committed artifact; commit it before registering")
    entry = layout.registry_entry(checkpoint_id)
    if not force and (existing := get_checkpoint(layout, checkpoint_id)) is not None:
        return existing
    row = {
        "checkpoint_id": checkpoint_id,
        "run": layout.run,
        "iteration": int(iteration),
        "uri": uri,
        "parent_id": parent_id,
        "training": training,
        "step": None if step is None else int(step),
        "final": bool(final),
        "data_uri": data_uri,
        "created_at": datetime.now(timezone.utc),
        "config_json": json.dumps(config, sort_keys=True, default=str) if config is not None else None,
        "details_json": json.dumps(details, sort_keys=True, default=str) if details is not None else None,
    }
    write_table(entry, pa.Table.from_pylist([row]), "checkpoints", force=force)
    record = get_checkpoint(layout, checkpoint_id)
    assert record is not None
    return record


def get_checkpoint(layout: RunLayout, checkpoint_id: str) -> CheckpointRecord | None:
    """The registered checkpoint, or None if it is not registered."""
    from srlm.store import is_committed, read_table

    check_checkpoint_id(checkpoint_id)
    entry = layout.registry_entry(checkpoint_id)
    if not is_committed(entry):
        return None
    rows = read_table(entry, "checkpoints").to_pylist()
    if len(rows) != 1:
        raise StoreError(f"{entry}: a registry entry must hold exactly one row, found {len(rows)}")
    return _record(rows[0])


def list_checkpoints(layout: RunLayout) -> pa.Table:
    """Every registered checkpoint of the run, ordered by iteration, then intermediate saves by step, then the
    final one."""
    from srlm.store import list_committed, read_table
    from srlm.store.schemas import schema

    tables = [read_table(uri, "checkpoints") for uri in list_committed(layout.registry)]
    if not tables:
        return schema("checkpoints").empty_table()
    table = pa.concat_tables(tables)
    keys = sorted(
        range(table.num_rows),
        key=lambda i: (
            table["iteration"][i].as_py(),
            table["final"][i].as_py(),
            table["step"][i].as_py() or 0,
            table["checkpoint_id"][i].as_py(),
        ),
    )
    return table.take(pa.array(keys, type=pa.int64()))


def list_records(layout: RunLayout) -> list[CheckpointRecord]:
    return [_record(row) for row in list_checkpoints(layout).to_pylist()]


def latest_final(layout: RunLayout) -> CheckpointRecord | None:
    """The final checkpoint of the highest iteration (M_t for the largest t registered), or None."""
    finals = [record for record in list_records(layout) if record.final]
    return max(finals, key=lambda r: (r.iteration, r.created_at)) if finals else None


def check_checkpoint_id(checkpoint_id: str) -> str:
    if not isinstance(checkpoint_id, str) or not _ID_PATTERN.match(checkpoint_id):
        raise StoreError(
            f"checkpoint id {checkpoint_id!r}: use letters, digits, '.', '_' and '-' only (e.g. M1, M1-step200)"
        )
    return checkpoint_id


def _record(row: dict[str, Any]) -> CheckpointRecord:
    return CheckpointRecord(**row)
