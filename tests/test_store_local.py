"""The artifact store on a local filesystem: commit protocol, validation, idempotence, shards, directories."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srlm.config import SRLMConfig
from srlm.errors import ConcurrentWriteError, DamagedArtifactError, StoreError, UncommittedArtifactError
from srlm.store import (
    commit_shards,
    delete_artifact,
    exists,
    fetch_directory,
    is_committed,
    list_committed,
    read_manifest,
    read_table,
    read_text,
    schemas,
    shard_uri,
    write_directory,
    write_table,
    write_text,
)
from srlm.store.uri import join_uri


def prompt_rows(n: int, start: int = 0, text: str = "prompt") -> list[dict]:
    return [
        {"prompt_id": f"p{i:05d}", "prompt": f"{text} {i}", "source": "seed", "iteration": 1}
        for i in range(start, start + n)
    ]


def attempts(uri: str) -> list[str]:
    path = Path(uri.removeprefix("file://"), "_attempts")
    return sorted(os.listdir(path)) if path.exists() else []


def test_table_round_trip_and_manifest(tmp_store):
    uri = join_uri(tmp_store, "prompts")
    config = SRLMConfig()
    manifest = write_table(uri, prompt_rows(10), "prompts", producer=config, rows_per_file=4)

    assert is_committed(uri)
    table = read_table(uri, "prompts")
    assert table.schema.equals(schemas.schema("prompts"))
    assert table.column("prompt_id").to_pylist() == [f"p{i:05d}" for i in range(10)]
    assert table.column("generator").null_count == 10  # nullable column absent from the rows

    on_disk = json.loads(Path(tmp_store, "prompts", "_SUCCESS").read_text())
    assert on_disk["kind"] == "table"
    assert on_disk["schema_name"] == "prompts"
    assert on_disk["schema_version"] == schemas.SCHEMA_VERSION
    assert on_disk["total_rows"] == 10
    assert [f["rows"] for f in on_disk["files"]] == [4, 4, 2]
    assert on_disk["producer"]["config"] == config.to_dict()
    assert on_disk["producer"]["code_version"].startswith("0.")
    assert datetime.fromisoformat(on_disk["created_at"]).tzinfo is not None
    for entry in on_disk["files"]:
        assert entry["path"].startswith(f"_attempts/{manifest.attempt_id}/")
        data = Path(tmp_store, "prompts", entry["path"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert pq.ParquetFile(Path(tmp_store, "prompts", entry["path"])).metadata.num_rows == entry["rows"]
    assert read_manifest(uri) == manifest


def test_many_files_keep_row_order(tmp_store):
    uri = join_uri(tmp_store, "t")
    write_table(uri, prompt_rows(1000), "prompts", rows_per_file=37)
    assert len(read_manifest(uri).files) == 28
    assert read_table(uri).column("prompt_id").to_pylist() == [f"p{i:05d}" for i in range(1000)]
    assert read_table(uri, verify=True).column("prompt_id").to_pylist() == [f"p{i:05d}" for i in range(1000)]


def test_read_selected_columns(tmp_store):
    uri = join_uri(tmp_store, "t")
    write_table(uri, prompt_rows(3), "prompts")
    assert read_table(uri, columns=["prompt"]).column_names == ["prompt"]
    with pytest.raises(StoreError, match="no column.*'nope'"):
        read_table(uri, columns=["prompt", "nope"])


def test_accepts_arrow_tables_and_column_dicts_and_casts(tmp_store):
    table = pa.table(
        {
            "prompt_id": ["a", "b"],
            "prompt": ["x", "y"],
            "source": ["seed", "seed"],
            "iteration": pa.array([1, 2], pa.int64()),  # schema says int32: safely castable
        }
    )
    write_table(join_uri(tmp_store, "a"), table, "prompts")
    assert read_table(join_uri(tmp_store, "a")).schema.field("iteration").type == pa.int32()
    write_table(join_uri(tmp_store, "b"), {"prompt_id": ["a"], "prompt": ["x"], "source": ["seed"]}, "prompts")
    assert read_table(join_uri(tmp_store, "b")).num_rows == 1


def test_nested_and_timestamp_columns(tmp_store):
    rows = [
        {
            "example_id": "e1",
            "kind": "ift",
            # keys in the opposite order of the schema's struct
            "prompt_messages": [{"content": "hi", "role": "user"}],
            "completion": "hello",
        }
    ]
    write_table(join_uri(tmp_store, "sft"), rows, "sft_examples")
    back = read_table(join_uri(tmp_store, "sft")).to_pylist()[0]
    assert back["prompt_messages"] == [{"role": "user", "content": "hi"}]

    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    entry = {
        "checkpoint_id": "M0", "run": "r", "iteration": 0, "uri": "/x", "training": "sft", "final": True,
        "created_at": created,
    }  # fmt: skip
    write_table(join_uri(tmp_store, "reg"), [entry], "checkpoints")
    assert read_table(join_uri(tmp_store, "reg")).to_pylist()[0]["created_at"] == created


def test_empty_table_commits(tmp_store):
    uri = join_uri(tmp_store, "pairs")
    manifest = write_table(uri, [], "pairs")
    assert manifest.total_rows == 0
    table = read_table(uri, "pairs")
    assert table.num_rows == 0 and table.schema.equals(schemas.schema("pairs"))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "x", "source": "seed"}], r"schema 'prompts': required column 'prompt_id' is missing"),
        (
            [{"prompt_id": "a", "prompt": "x", "source": "seed", "iteration": "three"}],
            r"schema 'prompts': column 'iteration' .*int32",
        ),
        ([{"prompt_id": "a", "prompt": None, "source": "seed"}], r"column 'prompt' is required but has 1 null"),
        ([{"prompt_id": "a", "prompt": "x", "source": "seed", "promtp": "typo"}], r"unknown column\(s\) 'promtp'"),
    ],
)
def test_schema_violations_name_column_and_schema(tmp_store, rows, message):
    uri = join_uri(tmp_store, "bad")
    with pytest.raises(StoreError, match=message):
        write_table(uri, rows, "prompts")
    assert not is_committed(uri)


def test_uncastable_arrow_column_names_column_and_schema(tmp_store):
    table = pa.table(
        {"prompt_id": ["a"], "prompt": ["x"], "source": ["seed"], "iteration": pa.array([[1]], pa.list_(pa.int64()))}
    )
    with pytest.raises(StoreError, match=r"schema 'prompts': column 'iteration' has type list<.*cannot be cast"):
        write_table(join_uri(tmp_store, "bad"), table, "prompts")


def test_unknown_schema(tmp_store):
    with pytest.raises(StoreError, match="unknown schema 'nope'"):
        write_table(join_uri(tmp_store, "x"), prompt_rows(1), "nope")


def test_uncommitted_read_names_uri(tmp_store):
    uri = join_uri(tmp_store, "never")
    assert not is_committed(uri)
    with pytest.raises(UncommittedArtifactError, match=f"^{uri}: not committed"):
        read_table(uri)
    with pytest.raises(UncommittedArtifactError):
        fetch_directory(uri)


def test_wrong_schema_name_on_read(tmp_store):
    uri = join_uri(tmp_store, "t")
    write_table(uri, prompt_rows(1), "prompts")
    with pytest.raises(StoreError, match="holds 'prompts' rows, expected 'pairs'"):
        read_table(uri, "pairs")


def test_newer_schema_version_is_refused(tmp_store):
    uri = join_uri(tmp_store, "t")
    write_table(uri, prompt_rows(1), "prompts")
    manifest_path = Path(tmp_store, "t", "_SUCCESS")
    data = json.loads(manifest_path.read_text())
    data["schema_version"] = schemas.SCHEMA_VERSION + 1
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="newer than this srlm"):
        read_table(uri)


def test_older_schema_version_reads_added_columns_as_null(tmp_store):
    """A file written before a nullable column was appended reads back with that column as nulls."""
    uri = join_uri(tmp_store, "t")
    manifest = write_table(uri, prompt_rows(2), "prompts")
    old = pa.table({"prompt_id": ["a"], "prompt": ["x"], "source": ["seed"], "iteration": pa.array([1], pa.int32())})
    path = Path(tmp_store, "t", manifest.files[0].path)
    pq.write_table(old, path)
    data = json.loads(Path(tmp_store, "t", "_SUCCESS").read_text())
    data["schema_version"] = 0
    data["files"][0].update(rows=1, bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    Path(tmp_store, "t", "_SUCCESS").write_text(json.dumps(data))
    table = read_table(uri, verify=True)
    assert table.to_pylist() == [{"prompt_id": "a", "prompt": "x", "source": "seed", "iteration": 1, "generator": None}]


def test_committed_write_is_a_noop_and_force_replaces(tmp_store):
    uri = join_uri(tmp_store, "t")
    first = write_table(uri, prompt_rows(3), "prompts")
    again = write_table(uri, prompt_rows(5, text="other"), "prompts")
    assert again == first
    assert attempts(uri) == [first.attempt_id]
    assert read_table(uri).num_rows == 3

    replaced = write_table(uri, prompt_rows(5, text="other"), "prompts", force=True)
    assert replaced.attempt_id != first.attempt_id
    assert read_table(uri).column("prompt").to_pylist()[0] == "other 0"
    assert attempts(uri) == [replaced.attempt_id]  # the replaced attempt was cleaned up


def test_verify_detects_damaged_files(tmp_store):
    uri = join_uri(tmp_store, "t")
    manifest = write_table(uri, prompt_rows(3), "prompts")
    data_file = Path(tmp_store, "t", manifest.files[0].path)
    other = pa.table({"prompt_id": ["z"], "prompt": ["z"], "source": ["seed"]})
    pq.write_table(other, data_file)  # still valid Parquet, but not the committed bytes
    with pytest.raises(DamagedArtifactError, match=f"{uri}: {manifest.files[0].path}: checksum mismatch"):
        read_table(uri)  # verification is the default
    assert read_table(uri, verify=False).column("prompt_id").to_pylist() == ["z"]  # what an unchecked read uses
    data_file.unlink()
    with pytest.raises(DamagedArtifactError, match=f"{uri}: {manifest.files[0].path}: missing"):
        read_table(uri)


def test_shards_resume_and_union(tmp_store):
    uri = join_uri(tmp_store, "candidates")
    shards = [shard_uri(uri, i) for i in range(3)]
    assert shards[2] == join_uri(uri, "shards", "00002")
    write_table(shards[0], prompt_rows(2, start=0), "prompts")
    write_table(shards[2], prompt_rows(2, start=4), "prompts")

    # a resuming step finds which shards are done
    assert list_committed(join_uri(uri, "shards")) == [shards[0], shards[2]]
    with pytest.raises(UncommittedArtifactError, match=shards[1]):
        commit_shards(uri, shards, "prompts")
    assert not is_committed(uri)

    write_table(shards[1], prompt_rows(2, start=2), "prompts")
    manifest = commit_shards(uri, shards, "prompts", producer={"step": "generate"})
    assert manifest.total_rows == 6
    assert manifest.producer["step"] == "generate" and "code_version" in manifest.producer
    assert all(f.path.startswith("shards/") for f in manifest.files)
    assert read_table(uri, "prompts").column("prompt_id").to_pylist() == [f"p{i:05d}" for i in range(6)]
    assert commit_shards(uri, shards[:1], "prompts") == manifest  # committed: no-op
    with pytest.raises(ConcurrentWriteError, match=f"{uri}: already committed by a different producer"):
        commit_shards(uri, shards[:1], "prompts", producer={"step": "judge"})  # never silently someone else's


def test_commit_shards_checks_schema_and_location(tmp_store):
    uri = join_uri(tmp_store, "c")
    write_table(shard_uri(uri, 0), prompt_rows(1), "prompts")
    with pytest.raises(StoreError, match="expected 'candidates' table"):
        commit_shards(uri, [shard_uri(uri, 0)], "candidates")
    elsewhere = join_uri(tmp_store, "elsewhere")
    write_table(elsewhere, prompt_rows(1), "prompts")
    with pytest.raises(StoreError, match="is not inside"):
        commit_shards(uri, [elsewhere], "prompts")
    empty = commit_shards(join_uri(tmp_store, "empty"), [], "prompts")
    assert empty.total_rows == 0 and read_table(join_uri(tmp_store, "empty")).num_rows == 0


def test_list_committed_only_lists_committed_children(tmp_store):
    write_table(join_uri(tmp_store, "runs", "b"), prompt_rows(1), "prompts")
    write_table(join_uri(tmp_store, "runs", "a"), prompt_rows(1), "prompts")
    Path(tmp_store, "runs", "half", "_attempts", "x").mkdir(parents=True)
    assert list_committed(join_uri(tmp_store, "runs")) == [join_uri(tmp_store, "runs", n) for n in ("a", "b")]
    assert list_committed(join_uri(tmp_store, "missing")) == []


def test_file_uris(tmp_path):
    uri = f"file://{tmp_path}/store/t"
    write_table(uri, prompt_rows(2), "prompts")
    assert Path(tmp_path, "store", "t", "_SUCCESS").exists()
    assert read_table(uri).num_rows == 2
    assert list_committed(f"file://{tmp_path}/store") == [uri]


def test_text_objects(tmp_store):
    uri = join_uri(tmp_store, "summaries", "prompts", "summary.json")
    assert not exists(uri)
    write_text(uri, '{"kept": 1}')
    write_text(uri, '{"kept": 2, "note": "ünïcode"}')
    assert json.loads(read_text(uri)) == {"kept": 2, "note": "ünïcode"}
    assert exists(uri)
    assert os.listdir(Path(tmp_store, "summaries", "prompts")) == ["summary.json"]  # no temp files left
    with pytest.raises(StoreError, match="not found"):
        read_text(join_uri(tmp_store, "nothing.txt"))


def test_delete_artifact(tmp_store):
    uri = join_uri(tmp_store, "t")
    write_table(uri, prompt_rows(1), "prompts")
    write_table(shard_uri(uri, 0), prompt_rows(1), "prompts")
    delete_artifact(uri)
    assert not is_committed(uri) and not is_committed(shard_uri(uri, 0))
    assert not Path(tmp_store, "t").exists()
    delete_artifact(uri)  # deleting nothing is fine
    with pytest.raises(StoreError, match="refusing"):
        delete_artifact("/")


def make_checkpoint(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "sub" / "weights.bin").write_bytes(os.urandom(300_000))
    return path


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_directory_round_trip_without_copy(tmp_store, tmp_path):
    source = make_checkpoint(tmp_path / "ckpt")
    uri = join_uri(tmp_store, "models", "M0")
    manifest = write_directory(uri, source, producer={"config": {"lr": 1}})
    assert manifest.kind == "directory" and manifest.schema_name == "checkpoint"
    assert sorted(f.path.split("/", 2)[2] for f in manifest.files) == ["config.json", "sub/weights.bin"]

    fetched = fetch_directory(uri)
    assert fetched == Path(tmp_store, "models", "M0", "_attempts", manifest.attempt_id)
    assert tree(fetched) == tree(source)
    assert fetch_directory(uri, verify=True) == fetched

    assert write_directory(uri, source) == manifest  # no-op
    with pytest.raises(StoreError, match="is a directory artifact"):
        read_table(uri)


def test_directory_fetch_to_dest_is_a_verified_copy(tmp_store, tmp_path):
    source = make_checkpoint(tmp_path / "ckpt")
    uri = join_uri(tmp_store, "m")
    write_directory(uri, source)
    dest = tmp_path / "out" / "model"
    assert fetch_directory(uri, dest) == dest
    assert {k: v for k, v in tree(dest).items() if not k.startswith(".srlm")} == tree(source)
    assert fetch_directory(uri, dest) == dest  # complete copy reused
    rewritten = write_directory(join_uri(tmp_store, "copy"), dest)  # a fetched copy stores without its marker
    assert sorted(f.path.split("/", 2)[2] for f in rewritten.files) == ["config.json", "sub/weights.bin"]
    (tmp_path / "occupied").mkdir()
    with pytest.raises(StoreError, match="exists and does not hold"):
        fetch_directory(uri, tmp_path / "occupied")


def test_directory_errors(tmp_store, tmp_path):
    with pytest.raises(StoreError, match="not a directory"):
        write_directory(join_uri(tmp_store, "m"), tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no files"):
        write_directory(join_uri(tmp_store, "m"), tmp_path / "empty")
    write_table(join_uri(tmp_store, "t"), prompt_rows(1), "prompts")
    with pytest.raises(StoreError, match="is a table artifact"):
        fetch_directory(join_uri(tmp_store, "t"))


def test_unsupported_scheme():
    with pytest.raises(StoreError, match="unsupported URI scheme 'gs'"):
        is_committed("gs://bucket/x")
