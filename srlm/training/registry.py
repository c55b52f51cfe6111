"""The checkpoint registry of a run: one committed single-row `checkpoints` table per checkpoint, at
RunLayout.registry_entry(checkpoint_id). One artifact per checkpoint keeps registration atomic and idempotent
without a shared table that concurrent writers would have to merge.

The table's `uri` holds the checkpoint's path relative to the store root ('runs/x/models/M1', and `data_uri` the
training data's, when it is in the store), resolved against the root in use when read (RunLayout.resolve): a
moved, renamed or copied store finds its own models, and never another store's. Entries written by older srlm
hold the URI as it was given (absolute, or relative to that process's working directory); see `_checkpoint_path`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from srlm.errors import StoreError, UncommittedArtifactError
from srlm.store.layout import RunLayout, is_store_relative
from srlm.store.uri import join_uri

TRAINING_KINDS = ("sft", "dpo")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CheckpointRecord:
    """One registry row, its locations resolved against the store it was read from (`uri`: the checkpoint
    artifact's URI there; `data_uri`: the training data's, comma-separated). Attribute access (record.uri) and, for
    code written against dicts, record["uri"]."""

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
    """Register a committed checkpoint artifact of this store (`uri`, recorded relative to the store root).
    Registering an id again returns the existing record unchanged (the first registration wins) unless `force`,
    which replaces it (a retrained checkpoint)."""
    from srlm.store import is_committed, write_table

    check_checkpoint_id(checkpoint_id)
    if training not in TRAINING_KINDS:
        raise StoreError(
            f"checkpoint {checkpoint_id}: training must be one of {', '.join(TRAINING_KINDS)}, got {training!r}"
        )
    try:
        path = layout.relative(uri)
    except StoreError as exc:
        raise StoreError(
            f"checkpoint {checkpoint_id}: {uri} is outside the store {layout.root}; a store's registry names only "
            "its own artifacts (commit the checkpoint into the store first)"
        ) from exc
    if not is_committed(uri):
        raise StoreError(f"checkpoint {checkpoint_id}: {uri} is not a committed artifact; commit it before registering")
    entry = layout.registry_entry(checkpoint_id)
    if not force and (existing := get_checkpoint(layout, checkpoint_id)) is not None:
        return existing
    row = {
        "checkpoint_id": checkpoint_id,
        "run": layout.run,
        "iteration": int(iteration),
        "uri": path,
        "parent_id": parent_id,
        "training": training,
        "step": None if step is None else int(step),
        "final": bool(final),
        "data_uri": _joined(data_uri, layout.portable),
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
    return _record(layout, entry, rows[0])


def committed_checkpoint(layout: RunLayout, checkpoint_id: str) -> CheckpointRecord | None:
    """The registered checkpoint, or None if it is not registered; UncommittedArtifactError naming it and where it
    looked when it is registered but its artifact is missing from this store (a copy made without its models):
    it is neither looked for in another store nor silently trained again."""
    from srlm.store import is_committed

    record = get_checkpoint(layout, checkpoint_id)
    if record is not None and not is_committed(record.uri):
        raise UncommittedArtifactError(
            f"checkpoint {checkpoint_id}: missing: registered in run {layout.run!r} at {layout.relative(record.uri)}, "
            f"but {record.uri} is not committed (was the store copied or moved without its models?)"
        )
    return record


def list_checkpoints(layout: RunLayout) -> pa.Table:
    """Every registered checkpoint of the run, ordered by iteration, then intermediate saves by step, then the
    final one; locations resolved against this store, as in CheckpointRecord."""
    from srlm.store import list_committed, read_table
    from srlm.store.schemas import schema

    rows = [
        asdict(_record(layout, uri, row))
        for uri in list_committed(layout.registry)
        for row in read_table(uri, "checkpoints").to_pylist()
    ]
    if not rows:
        return schema("checkpoints").empty_table()
    table = pa.Table.from_pylist(rows, schema=schema("checkpoints"))
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
    return [CheckpointRecord(**row) for row in list_checkpoints(layout).to_pylist()]


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


def _record(layout: RunLayout, entry: str, row: dict[str, Any]) -> CheckpointRecord:
    run = row["run"]
    uri = layout.resolve(_checkpoint_path(layout, entry, row))
    data_uri = _joined(row["data_uri"], lambda part: _data_location(layout, run, part))
    return CheckpointRecord(**{**row, "uri": uri, "data_uri": data_uri})


def _checkpoint_path(layout: RunLayout, entry: str, row: dict[str, Any]) -> str:
    """The store-relative path of a row's checkpoint: what this srlm records, or what an older one's URI means.

    Older srlm recorded the URI as given: absolute, or relative to that process's working directory. One inside
    this store (however spelled) is that path. One that is not, but runs through this run's own directory
    ('…/runs/<run>/models/M1'), is this store's artifact from before it was moved, renamed or copied (or opened
    from another directory), so it is the same path here. Anything else is refused, never followed into
    another store.
    """
    recorded = row["uri"]
    if (path := _older_run_path(recorded, row["run"])) is not None:
        return path
    if is_store_relative(recorded):
        return recorded
    try:
        return layout.relative(recorded)
    except StoreError:
        raise StoreError(
            f"checkpoint {row['checkpoint_id']}: registry entry {entry} points outside the store {layout.root} "
            f"({recorded}); a store uses only its own artifacts (register the checkpoint from this store's models)"
        ) from None


def _data_location(layout: RunLayout, run: str, recorded: str) -> str:
    """A data_uri part as a URI: store-relative ones resolved here; an older absolute one that names this store
    or this run's directory mapped as in `_checkpoint_path`; data from elsewhere as recorded."""
    path = _older_run_path(recorded, run)
    if path is None:
        path = recorded if is_store_relative(recorded) else layout.portable(recorded)
    return layout.resolve(path) if is_store_relative(path) else path


def _older_run_path(recorded: str, run: str) -> str | None:
    """The store-relative path in a URI that an older srlm recorded with the store root in front ('srlm-store/runs/
    x/models/M1', '/abs/store/runs/x/models/M1': 'runs/x/models/M1'); None when `recorded` has no root in front
    of the run's directory (this srlm's paths start with it)."""
    marker = "/" + join_uri("runs", run) + "/"
    cut = recorded.rfind(marker)
    return None if cut < 0 else recorded[cut + 1 :]


def _joined(uris: str | None, convert: Callable[[str], str]) -> str | None:
    """Apply `convert` to each of a comma-separated list of URIs (a registry row's data_uri)."""
    return None if uris is None else ",".join(convert(part) for part in uris.split(","))
