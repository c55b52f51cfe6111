"""The artifact store against an S3 API (moto's server), checked with independent boto3 and pyarrow clients."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from srlm import store
from srlm.config import SRLMConfig, StoreConfig
from srlm.errors import StoreError, UncommittedArtifactError
from srlm.store.filesystems import s3_client, s3_settings
from srlm.store.uri import join_uri, split_s3
from tests.fixtures.store import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, FAKE_SESSION_TOKEN


def prompt_rows(n: int, start: int = 0) -> list[dict]:
    return [{"prompt_id": f"p{i:04d}", "prompt": f"prompt {i}", "source": "seed"} for i in range(start, start + n)]


def keys(uri: str) -> list[str]:
    bucket, prefix = split_s3(uri)
    listing = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/"))


def test_table_on_s3_reads_back_with_independent_clients(s3_store, s3_server):
    uri = join_uri(s3_store, "prompts")
    manifest = store.write_table(uri, prompt_rows(25), "prompts", rows_per_file=10)
    bucket, prefix = split_s3(uri)

    # boto3: the manifest is a plain JSON object and every listed file matches its checksum
    client = s3_client()
    body = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/_SUCCESS")["Body"].read())
    assert body["total_rows"] == 25 and body["schema_name"] == "prompts"
    rows = 0
    for entry in body["files"]:
        data = client.get_object(Bucket=bucket, Key=f"{prefix}/{entry['path']}")["Body"].read()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        rows += pq.read_table(io.BytesIO(data)).num_rows
    assert rows == 25
    assert keys(uri) == sorted([f"{prefix}/_SUCCESS"] + [f"{prefix}/{f.path}" for f in manifest.files])

    # pyarrow with its own S3 client
    fs = pafs.S3FileSystem(endpoint_override=s3_server.split("://")[1], scheme="http", region="us-east-1")
    direct = pq.read_table(f"{bucket}/{prefix}/{manifest.files[0].path}", filesystem=fs)
    assert direct.column("prompt_id").to_pylist() == [f"p{i:04d}" for i in range(10)]

    assert store.read_table(uri, verify=True).column("prompt_id").to_pylist() == [f"p{i:04d}" for i in range(25)]


def test_s3_idempotence_force_and_cleanup(s3_store):
    uri = join_uri(s3_store, "t")
    first = store.write_table(uri, prompt_rows(3), "prompts")
    assert store.write_table(uri, prompt_rows(1), "prompts") == first
    second = store.write_table(uri, prompt_rows(4), "prompts", force=True)
    assert store.read_table(uri).num_rows == 4
    assert not any(first.attempt_id in key for key in keys(uri))
    assert any(second.attempt_id in key for key in keys(uri))


def test_s3_uncommitted_and_listing(s3_store):
    uri = join_uri(s3_store, "runs", "x")
    with pytest.raises(UncommittedArtifactError, match=uri):
        store.read_table(uri)
    bucket, prefix = split_s3(uri)
    s3_client().put_object(Bucket=bucket, Key=f"{prefix}/_attempts/dead/part-00000.parquet", Body=b"PAR1")
    store.write_table(join_uri(s3_store, "runs", "y"), prompt_rows(1), "prompts")
    assert store.list_committed(join_uri(s3_store, "runs")) == [join_uri(s3_store, "runs", "y")]
    assert not store.is_committed(uri)


def test_s3_shards(s3_store):
    uri = join_uri(s3_store, "judgments")
    shards = [store.shard_uri(uri, i) for i in range(2)]
    for i, shard in enumerate(shards):
        store.write_table(shard, prompt_rows(3, start=3 * i), "prompts")
    assert store.list_committed(join_uri(uri, "shards")) == shards
    store.commit_shards(uri, shards, "prompts")
    assert store.read_table(uri).num_rows == 6


def test_s3_directory_fetch_is_cached_and_concurrency_safe(s3_store, tmp_path):
    source = tmp_path / "ckpt"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "model.safetensors").write_bytes(os.urandom(3_000_000))
    uri = join_uri(s3_store, "models", "M1")
    manifest = store.write_directory(uri, source)

    cache = tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(store.fetch_directory(uri, cache_dir=cache))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(results) == {cache / manifest_sha(uri)}
    fetched = results[0]
    assert (fetched / "sub" / "model.safetensors").read_bytes() == (source / "sub" / "model.safetensors").read_bytes()
    assert sorted(os.listdir(cache)) == [fetched.name]  # no partial directories left behind
    assert manifest.kind == "directory"

    dest = tmp_path / "dest"
    assert store.fetch_directory(uri, dest) == dest
    assert (dest / "config.json").read_text() == "{}"


def test_s3_fetch_detects_damaged_object(s3_store, tmp_path):
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "w.bin").write_bytes(b"weights" * 1000)
    uri = join_uri(s3_store, "m")
    manifest = store.write_directory(uri, source)
    bucket, prefix = split_s3(uri)
    s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{manifest.files[0].path}", Body=b"tampered")
    with pytest.raises(StoreError, match=f"{uri}: {manifest.files[0].path}: checksum mismatch"):
        store.fetch_directory(uri, cache_dir=tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []  # the failed download left nothing


def test_s3_text_and_delete(s3_store):
    text_uri = join_uri(s3_store, "report", "summary.md")
    store.write_text(text_uri, "# report\n")
    assert store.read_text(text_uri) == "# report\n"
    uri = join_uri(s3_store, "t")
    store.write_table(uri, prompt_rows(2), "prompts")
    store.delete_artifact(uri)
    assert not store.is_committed(uri) and keys(uri) == []


def test_missing_bucket_is_one_clear_error(s3_server):
    with pytest.raises(StoreError, match="s3://srlm-no-such-bucket/x"):
        store.write_table("s3://srlm-no-such-bucket/x", prompt_rows(1), "prompts")


def test_store_config_overrides_environment(s3_store, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    try:
        store.configure_store(StoreConfig(uri=s3_store, s3_endpoint_url=s3_server, s3_region="us-east-1"))
        assert s3_settings().endpoint_url == s3_server and s3_settings().region == "us-east-1"
        store.write_table(join_uri(s3_store, "t"), prompt_rows(1), "prompts")
        assert store.read_table(join_uri(s3_store, "t")).num_rows == 1
    finally:
        store.configure_store(None)
    assert s3_settings().endpoint_url == "http://127.0.0.1:9"
    assert s3_settings().region == "eu-west-3"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)  # the S3-specific variable wins over the generic one
    assert s3_settings().endpoint_url == s3_server


def test_credentials_never_printed_or_logged(s3_store, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="srlm")
    uri = join_uri(s3_store, "t")
    manifest = store.write_table(uri, prompt_rows(2), "prompts", producer=SRLMConfig())
    store.read_table(uri)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    store.write_directory(join_uri(s3_store, "d"), tmp_path / "d")
    store.fetch_directory(join_uri(s3_store, "d"), cache_dir=tmp_path / "cache")
    errors = []
    for action in (
        lambda: store.read_table(join_uri(s3_store, "missing")),
        lambda: store.write_table("s3://srlm-no-such-bucket/x", prompt_rows(1), "prompts"),
    ):
        with pytest.raises(StoreError) as info:
            action()
        errors.append(str(info.value))
    print(repr(s3_settings()), s3_settings())

    out, err = capfd.readouterr()
    texts = {
        "log": caplog.text,
        "stdout": out,
        "stderr": err,
        "errors": "\n".join(errors),
        "manifest": store.read_manifest(uri).to_json(),
    }
    assert "committed" in caplog.text and "S3Settings" in out  # something was logged and printed
    for where, text in texts.items():
        for secret in (FAKE_SECRET_ACCESS_KEY, FAKE_SESSION_TOKEN, FAKE_ACCESS_KEY_ID):
            assert secret not in text, f"credential found in {where}"
    assert manifest.producer["config"]["store"] == SRLMConfig().store.__dict__


def manifest_sha(uri: str) -> str:
    return store.read_manifest(uri).sha256
