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
        layout.model("M1"),
        "M0",
        "dpo",
        250,
        True,
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


def raw_row(layout: RunLayout, checkpoint_id: str) -> dict:
    from srlm.store import read_table

    (row,) = read_table(layout.registry_entry(checkpoint_id), "checkpoints").to_pylist()
    return row


def write_raw(layout: RunLayout, row: dict) -> None:
    """A registry entry as srlm wrote it before locations were store-relative."""
    import pyarrow as pa

    from srlm.store import schemas, write_table

    table = pa.Table.from_pylist([row], schema=schemas.schema("checkpoints"))
    write_table(layout.registry_entry(row["checkpoint_id"]), table, "checkpoints", force=True)


def test_locations_are_recorded_relative_to_the_store_root_and_resolved_where_it_is(tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    layout = RunLayout("./store/", "exp")  # the root as a user may type it
    assert layout.root == str(tmp_path / "store") and layout == RunLayout(str(tmp_path / "store"), "exp")
    register(layout, "M1", 1, tmp_path, parent="M0")
    row = raw_row(layout, "M1")
    assert (row["uri"], row["data_uri"]) == ("runs/exp/models/M1", "runs/exp/data")

    shutil.move(tmp_path / "store", tmp_path / "renamed")
    monkeypatch.chdir(tmp_path / "src-M1")  # another working directory
    moved = RunLayout(str(tmp_path / "renamed"), "exp")
    record = get_checkpoint(moved, "M1")
    assert record.uri == moved.model("M1") and record.data_uri == f"{moved.run_uri}/data"
    assert list_checkpoints(moved).column("uri").to_pylist() == [moved.model("M1")]


def test_entries_of_older_srlm_resolve_inside_this_store_or_are_refused(tmp_store, tmp_path, monkeypatch):
    """Older srlm recorded the URI as given: one inside this store, or one through this run's own directory from
    before the store moved (or from another working directory), is this store's; anything else is refused."""
    layout = RunLayout(tmp_store, "exp")
    register(layout, "M1", 1, tmp_path, parent="M0")
    row = raw_row(layout, "M1")
    for recorded in (
        layout.model("M1"),  # absolute, this store
        "srlm-store/runs/exp/models/M1",  # relative to the working directory of the process that wrote it
        "/old/place/store/runs/exp/models/M1",  # absolute, the store before it was moved
        "file:///old/place/store/runs/exp/models/M1",
    ):
        write_raw(layout, {**row, "uri": recorded, "data_uri": "/old/place/store/runs/exp/data,/outside/x"})
        record = get_checkpoint(layout, "M1")
        assert record.uri == layout.model("M1"), recorded
        assert record.data_uri == f"{layout.run_uri}/data,/outside/x"
    write_raw(layout, {**row, "uri": "/another/store/models/M1"})
    with pytest.raises(StoreError, match=r"checkpoint M1: registry entry .*registry/M1 points outside the store"):
        get_checkpoint(layout, "M1")
    with pytest.raises(StoreError, match="points outside the store"):
        list_checkpoints(layout)


def test_register_refuses_an_artifact_outside_the_store(tmp_store, tmp_path):
    layout = RunLayout(tmp_store, "exp")
    other = commit_model(RunLayout(str(tmp_path / "other"), "exp"), "M0", tmp_path)
    with pytest.raises(StoreError, match=r"checkpoint M0: .*is outside the store .*names only its own artifacts"):
        register_checkpoint(layout, "M0", 0, other, None, "sft", None, True, None, None)


def test_a_registered_checkpoint_missing_from_the_store_is_an_error_naming_it(tmp_store, tmp_path):
    import shutil

    from srlm.errors import UncommittedArtifactError
    from srlm.training.registry import committed_checkpoint

    layout = RunLayout(tmp_store, "exp")
    register(layout, "M0", 0, tmp_path, training="sft")
    assert committed_checkpoint(layout, "M0").uri == layout.model("M0")
    assert committed_checkpoint(layout, "M1") is None  # not registered: the caller says which step makes it
    shutil.rmtree(layout.model("M0"))
    with pytest.raises(UncommittedArtifactError, match=r"checkpoint M0: missing: .* at runs/exp/models/M0, but "):
        committed_checkpoint(layout, "M0")
