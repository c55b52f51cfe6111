"""Verified reads: a damaged committed file is caught by checksum before its data is used, the remembered checks
skip re-hashing only while a file is unchanged, and `srlm store verify` reports every damaged artifact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from srlm.cli.main import main
from srlm.errors import DamagedArtifactError, StoreError
from srlm.store import RunLayout, artifacts, integrity
from srlm.store.filesystems import s3_client
from srlm.store.uri import join_uri, split_s3


@pytest.fixture(autouse=True)
def private_records(tmp_path, monkeypatch):
    """Remembered checks of this test only: its own cache dir, nothing left in memory from other tests."""
    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "srlm-cache"))
    artifacts.verified_files.forget()
    yield
    artifacts.verified_files.forget()


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """Counts files hashed (every check starts one digest); files count as settled at once (no racy window)."""
    calls: list[int] = []
    real = integrity.new_digest

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(integrity, "new_digest", counting)
    monkeypatch.setattr(integrity, "RACY_WINDOW_NS", 0)
    return calls


def flip_bit(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def judgment_rows(n: int) -> list[dict]:
    return [
        {"prompt_id": f"p{i // 2}", "candidate_id": f"p{i // 2}-c{i % 2}", "sample_index": 0,
         "judgment": f"Score: {i % 5 + 1}", "score": float(i % 5 + 1), "parse_ok": True}
        for i in range(n)
    ]  # fmt: skip


def checkpoint(directory: Path) -> Path:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    save_file({"w": np.arange(4096, dtype=np.float32)}, str(directory / "model.safetensors"))
    return directory


def listed(uri: str, manifest, name: str) -> Path:
    entry = next(f for f in manifest.files if f.path.endswith(name))
    return Path(uri, entry.path)


def test_flipped_bit_in_a_table_is_a_checksum_mismatch(tmp_store):
    uri = join_uri(tmp_store, "judgments")
    manifest = artifacts.write_table(uri, judgment_rows(40), "judgments")
    flip_bit(Path(uri, manifest.files[0].path))
    message = f"{uri}: {manifest.files[0].path}: checksum mismatch"
    with pytest.raises(DamagedArtifactError, match=message) as error:
        artifacts.read_table(uri)
    assert "\n" not in str(error.value) and str(error.value).endswith("the artifact is damaged")
    with pytest.raises(DamagedArtifactError, match=message):
        artifacts.read_table(uri, columns=["candidate_id"])  # a column subset still checks the whole file


def test_truncated_and_missing_files_are_caught(tmp_store, tmp_path):
    uri = join_uri(tmp_store, "t")
    manifest = artifacts.write_table(uri, judgment_rows(10), "judgments")
    data = Path(uri, manifest.files[0].path)
    data.write_bytes(data.read_bytes()[:-7])
    with pytest.raises(DamagedArtifactError, match=rf"checksum mismatch \(expected {manifest.files[0].bytes} bytes"):
        artifacts.read_table(uri)
    data.unlink()
    with pytest.raises(DamagedArtifactError, match=f"{manifest.files[0].path}: missing; the artifact is damaged"):
        artifacts.read_table(uri)

    model = join_uri(tmp_store, "models", "M0")
    committed = artifacts.write_directory(model, checkpoint(tmp_path / "ckpt"))
    listed(model, committed, "config.json").unlink()
    with pytest.raises(DamagedArtifactError, match="config.json: missing"):
        artifacts.fetch_directory(model)


def test_flipped_weight_byte_is_caught_in_place_and_by_model_resolution(tmp_store, tmp_path):
    from srlm.models.resolve import resolve_model

    uri = join_uri(tmp_store, "models", "M0")
    manifest = artifacts.write_directory(uri, checkpoint(tmp_path / "ckpt"))
    assert artifacts.fetch_directory(uri) == Path(uri, "_attempts", manifest.attempt_id)
    weights = listed(uri, manifest, "model.safetensors")
    flip_bit(weights, at=0.7)
    with pytest.raises(DamagedArtifactError, match=f"{uri}: .*model.safetensors: checksum mismatch"):
        artifacts.fetch_directory(uri)
    with pytest.raises(DamagedArtifactError, match="model.safetensors: checksum mismatch"):
        resolve_model(uri)  # what generation and training load checkpoints through


def test_remembered_check_skips_rehashing_until_the_file_changes(tmp_store, tmp_path, hashed):
    uri = join_uri(tmp_store, "models", "M0")
    manifest = artifacts.write_directory(uri, checkpoint(tmp_path / "ckpt"))
    hashed.clear()
    artifacts.fetch_directory(uri)
    assert len(hashed) == 2  # config.json and the weights, hashed once
    artifacts.fetch_directory(uri)
    artifacts.fetch_directory(uri)
    assert len(hashed) == 2  # unchanged: not hashed again

    weights = listed(uri, manifest, "model.safetensors")
    before = weights.stat()
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # same bytes, same mtime: ctime still moves
    artifacts.fetch_directory(uri)
    assert len(hashed) == 3  # only the touched file was re-hashed

    flip_bit(weights)
    with pytest.raises(DamagedArtifactError, match="checksum mismatch"):
        artifacts.fetch_directory(uri)
    with pytest.raises(DamagedArtifactError, match="checksum mismatch"):
        artifacts.fetch_directory(uri)  # a failed check is never remembered


def test_remembered_checks_outlive_the_process_on_disk(tmp_store, tmp_path, hashed):
    uri = join_uri(tmp_store, "t")
    artifacts.write_table(uri, judgment_rows(20), "judgments")
    artifacts.read_table(uri)
    hashed.clear()
    artifacts.verified_files.forget()  # a new process: only the records under the cache dir remain
    assert artifacts.read_table(uri).num_rows == 20
    assert hashed == []
    records = list((tmp_path / "srlm-cache" / "artifacts" / artifacts.VERIFIED_DIR).glob("*.json"))
    assert len(records) == 1

    records[0].write_text("{not json")  # a damaged record is ignored: the file is hashed again
    artifacts.verified_files.forget()
    artifacts.read_table(uri)
    assert len(hashed) == 1


def test_a_file_changed_just_before_its_check_is_not_remembered(tmp_store, hashed, monkeypatch):
    monkeypatch.setattr(integrity, "RACY_WINDOW_NS", 3600 * 10**9)  # everything is "just changed"
    uri = join_uri(tmp_store, "t")
    artifacts.write_table(uri, judgment_rows(4), "judgments")
    hashed.clear()
    artifacts.read_table(uri)
    artifacts.read_table(uri)
    assert len(hashed) == 2


def test_pairs_step_on_damaged_judgments_fails_before_committing(tmp_path, capsys):
    store = str(tmp_path / "store")
    layout = RunLayout(store, "r")
    candidates = [
        {"prompt_id": f"p{i // 2}", "candidate_id": f"p{i // 2}-c{i % 2}", "candidate_index": i % 2,
         "prompt": "Q", "response": f"r{i}"}
        for i in range(40)
    ]  # fmt: skip
    artifacts.write_table(layout.candidates(1), candidates, "candidates")
    manifest = artifacts.write_table(layout.judgments(1), judgment_rows(40), "judgments")
    flip_bit(Path(layout.judgments(1), manifest.files[0].path))
    assert main(["pairs", "--store", store, "--run", "r", "-t", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum mismatch" in err[0] and layout.judgments(1) in err[0]
    assert not artifacts.is_committed(layout.pairs(1))
    assert not Path(layout.pairs(1)).exists()


def test_store_verify_reports_damage_leftovers_and_json(tmp_path, capsys):
    store = str(tmp_path / "store")
    layout = RunLayout(store, "r")
    table = artifacts.write_table(layout.judgments(1), judgment_rows(8), "judgments")
    model = artifacts.write_directory(layout.model("M0"), checkpoint(tmp_path / "ckpt"))
    shard = artifacts.shard_uri(layout.candidates(1), 0)
    artifacts.write_table(shard, [], "candidates")
    artifacts.commit_shards(layout.candidates(1), [shard], "candidates")  # lists the shard's file too
    Path(layout.judgments(1), "_attempts", table.attempt_id, "stray.txt").write_text("x")  # unlisted: warning
    Path(layout.prompts(1), "_attempts", "dead").mkdir(parents=True)  # uncommitted leftover

    assert main(["store", "verify", store]) == 0
    out = capsys.readouterr().out
    assert "4 artifact(s) checked, 0 damaged, 1 file(s) not in a manifest, 1 uncommitted leftover(s)" in out

    flip_bit(listed(layout.model("M0"), model, "model.safetensors"))
    Path(layout.judgments(1), table.files[0].path).write_bytes(b"PAR1")
    assert main(["store", "verify", layout.run_uri, "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["checked"] == 4 and report["damaged"] == 2 and report["unlisted_files"] == 1
    damaged = {a["uri"] for a in report["artifacts"] if a["damaged"]}
    assert damaged == {layout.model("M0"), layout.judgments(1)}
    (err,) = captured.err.strip().splitlines()
    assert "2 of 4 artifact(s) damaged" in err and layout.model("M0") in err and layout.judgments(1) in err

    assert main(["store", "verify", layout.model("M0")]) == 1  # one artifact
    assert "model.safetensors: checksum mismatch" in capsys.readouterr().out
    assert main(["store", "verify", str(tmp_path / "nowhere")]) == 1
    assert "no such store" in capsys.readouterr().err


def test_s3_damage_is_caught_on_read_and_a_damaged_cached_copy_is_fetched_again(s3_store, tmp_path, capsys):
    uri = join_uri(s3_store, "j")
    manifest = artifacts.write_table(uri, judgment_rows(30), "judgments")
    bucket, prefix = split_s3(uri)
    key = f"{prefix}/{manifest.files[0].path}"
    body = bytearray(s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3_client().put_object(Bucket=bucket, Key=key, Body=bytes(body))
    with pytest.raises(DamagedArtifactError, match=f"{uri}: {manifest.files[0].path}: checksum mismatch"):
        artifacts.read_table(uri)
    assert main(["store", "verify", uri]) == 1
    capsys.readouterr()

    model = join_uri(s3_store, "models", "M0")
    committed = artifacts.write_directory(model, checkpoint(tmp_path / "ckpt"))
    cache = tmp_path / "fetched"
    copy = artifacts.fetch_directory(model, cache_dir=cache)
    flip_bit(copy / "model.safetensors")
    assert artifacts.fetch_directory(model, cache_dir=cache) == copy  # damaged cache entry: fetched again
    assert (copy / "model.safetensors").read_bytes() == (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    dest = artifacts.fetch_directory(model, tmp_path / "dest")
    flip_bit(dest / "model.safetensors")
    with pytest.raises(DamagedArtifactError, match="model.safetensors: checksum mismatch"):
        artifacts.fetch_directory(model, tmp_path / "dest")  # a copy the caller placed is not silently replaced
    assert committed.kind == "directory"


def test_read_file_checks_the_one_file_it_reads(tmp_store, tmp_path):
    uri = join_uri(tmp_store, "models", "M0")
    manifest = artifacts.write_directory(uri, checkpoint(tmp_path / "ckpt"))
    assert json.loads(artifacts.read_file(uri, "config.json")) == {"model_type": "llama"}
    with pytest.raises(StoreError, match=f"{uri}: the committed checkpoint lists no tokenizer.json"):
        artifacts.read_file(uri, "tokenizer.json")
    flip_bit(listed(uri, manifest, "config.json"), at=0.2)
    with pytest.raises(DamagedArtifactError, match="config.json: checksum mismatch"):
        artifacts.read_file(uri, "config.json")
