"""The checkpoint registry: single-row committed tables per checkpoint, idempotent, local and S3."""

from __future__ import annotations

import pytest

from srlm.errors import StoreError
from srlm.store import RunLayout, write_directory
from srlm.training.registry import (
    get_checkpoint,
    latest_final,
    list_checkpoints,
    register_checkpoint,
)


def commit_model(layout: RunLayout, checkpoint_id: str, tmp_path) -> str:
    source = tmp_path / f"src-{checkpoint_id}"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}')
    uri = layout.model(checkpoint_id)
    write_directory(uri, source)
    return uri


def register(layout, checkpoint_id, iteration, tmp_path, *, final=True, step=None, parent=None, training="dpo", **kw):
    uri = commit_model(layout, checkpoint_id, tmp_path)
    return register_checkpoint(
        layout,
        checkpoint_id,
        iteration=iteration,
        uri=uri,
        parent_id=parent,
        training=training,
        step=step,
        final=final,
        data_uri=f"{layout.run_uri}/data",
        config={"beta": 0.1},
        **kw,
    )


@pytest.fixture(params=["local", "s3"])
def layout(request, tmp_store) -> RunLayout:
    root = request.getfixturevalue("s3_store") if request.param == "s3" else tmp_store
    return RunLayout(root, "exp")


def test_registry_roundtrip_order_and_latest(layout, tmp_path):
    assert latest_final(layout) is None and list_checkpoints(layout).num_rows == 0
    m0 = register(layout, "M0", 0, tmp_path, training="sft", step=300)
    register(layout, "M1-step200", 1, tmp_path, final=False, step=200, parent="M0")
    m1 = register(layout, "M1", 1, tmp_path, step=250, parent="M0")
    register(layout, "M1-step100", 1, tmp_path, final=False, step=100, parent="M0")

    record = get_checkpoint(layout, "M1")
    assert record == m1
    assert (record.uri, record.parent_id, record.training, record.step, record.final) == (
        layout.model("M1"), "M0", "dpo", 250, True
    )
    assert record.run == "exp" and record.iteration == 1 and record.config == {"beta": 0.1}
    assert record["uri"] == record.uri and record.to_dict()["checkpoint_id"] == "M1"
    assert m0.training == "sft" and m0.parent_id is None

    table = list_checkpoints(layout)
    assert table.column("checkpoint_id").to_pylist() == ["M0", "M1-step100", "M1-step200", "M1"]
    assert latest_final(layout).checkpoint_id == "M1"
    assert get_checkpoint(layout, "M2") is None


def test_register_is_idempotent_unless_forced(tmp_store, tmp_path):
    layout = RunLayout(tmp_store, "exp")
    first = register(layout, "M0", 0, tmp_path, training="sft", step=10)
    again = register_checkpoint(
        layout, "M0", 0, layout.model("M0"), None, "sft", step=99, final=True, data_uri=None, config=None
    )
    assert again == first  # the first registration wins
    replaced = register_checkpoint(
        layout, "M0", 0, layout.model("M0"), None, "sft", step=99, final=True, data_uri=None, config=None, force=True
    )
    assert replaced.step == 99 and get_checkpoint(layout, "M0").step == 99


def test_register_refuses_uncommitted_uri_bad_id_and_kind(tmp_store):
    layout = RunLayout(tmp_store, "exp")
    with pytest.raises(StoreError, match="not a committed artifact"):
        register_checkpoint(layout, "M1", 1, layout.model("M1"), "M0", "dpo", None, True, None, None)
    with pytest.raises(StoreError, match="checkpoint id"):
        register_checkpoint(layout, "M1/../x", 1, layout.model("M1"), "M0", "dpo", None, True, None, None)
    with pytest.raises(StoreError, match="training must be one of"):
        register_checkpoint(layout, "M1", 1, layout.model("M1"), "M0", "ppo", None, True, None, None)


def test_details_roundtrip_and_old_entries_without_details_still_read(tmp_store, tmp_path, monkeypatch):
    """details is stored as JSON; entries written before details_json existed (schema version 1) read as {}."""
    import pyarrow as pa

    from srlm.store import read_manifest, schemas, write_table

    layout = RunLayout(tmp_store, "exp")
    details = {"backend": "ray", "world_size": 2, "nodes": ["a", "b"], "selection": {"selected_step": 4}}
    record = register(layout, "M1", 1, tmp_path, step=4, details=details)
    assert record.details == details and get_checkpoint(layout, "M1").details == details

    old = pa.schema([f for f in schemas.SCHEMAS["checkpoints"] if f.name != "details_json"])
    row = {name: value for name, value in record.to_dict().items() if name != "details_json"}
    row.update(checkpoint_id="M0", iteration=0, training="sft", step=2, uri=commit_model(layout, "M0", tmp_path))
    with monkeypatch.context() as patch:  # what srlm wrote before schema version 2
        patch.setitem(schemas.SCHEMAS, "checkpoints", old)
        patch.setattr(schemas, "SCHEMA_VERSION", 1)
        write_table(layout.registry_entry("M0"), pa.Table.from_pylist([row], schema=old), "checkpoints")
    assert read_manifest(layout.registry_entry("M0")).schema_version == 1
    record = get_checkpoint(layout, "M0")
    assert record.details_json is None and record.details == {} and record.step == 2
    assert list_checkpoints(layout).column("details_json").to_pylist() == [None, record_json(details)]


def record_json(details: dict) -> str:
    import json

    return json.dumps(details, sort_keys=True)
