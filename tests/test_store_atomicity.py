"""A writer SIGKILLed mid-write leaves nothing that reads as committed, and a rerun commits cleanly.

Each test starts a real writer process, stops it at a chosen point (it announces "ready" and blocks there), and
kills it with SIGKILL: no cleanup code runs, exactly like an OOM kill or a lost node.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srlm.errors import StoreError, UncommittedArtifactError
from srlm.store import (
    fetch_directory,
    is_committed,
    read_manifest,
    read_table,
    write_directory,
    write_table,
)
from srlm.store.filesystems import s3_client
from srlm.store.uri import join_uri, split_s3

REPO_ROOT = Path(__file__).resolve().parent.parent

# The writer's preamble: the store calls it may make, and rows with incompressible text so every Parquet part is
# hundreds of KiB.
MAKE_ROWS = """
import os
from srlm.store import fetch_directory, write_directory, write_table
def rows(n, tag):
    return [{"prompt_id": f"{tag}{i:06d}", "prompt": os.urandom(24).hex(), "source": "seed"} for i in range(n)]
"""

# Block on the first write past 64 KiB into the second data file: the first file is complete, the second is
# partly on disk (beyond any userspace buffer).
BLOCK_MID_SECOND_FILE = """
import sys, threading
import srlm.store.artifacts as artifacts
_sinks = []
_real_init, _real_write = artifacts._HashingSink.__init__, artifacts._HashingSink.write
def _init(self, out):
    _real_init(self, out)
    _sinks.append(self)
def _write(self, data):
    if len(_sinks) >= 2 and self is _sinks[1] and self.bytes > 64 * 1024:
        self.flush()
        print("ready", flush=True)
        threading.Event().wait()
    return _real_write(self, data)
artifacts._HashingSink.__init__, artifacts._HashingSink.write = _init, _write
"""

# Block just before the manifest is written: every data file is complete, nothing is committed.
BLOCK_BEFORE_COMMIT = """
import threading
import srlm.store.artifacts as artifacts
_real_write_atomic = artifacts._write_atomic
def _write_atomic(uri, data, **how):
    if uri.endswith("/_SUCCESS"):
        print("ready", flush=True)
        threading.Event().wait()
    return _real_write_atomic(uri, data, **how)
artifacts._write_atomic = _write_atomic
"""


def kill_writer_when_ready(hook: str, body: str) -> None:
    """Run `hook` + `body` (one store call) in a fresh Python, wait for its "ready" line, then SIGKILL it."""
    code = textwrap.dedent(MAKE_ROWS) + textwrap.dedent(hook) + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # A generous guard against a hung child, not a timing assertion.
        ready, _, _ = select.select([proc.stdout], [], [], 300)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"writer never reached the kill point: {line!r}\n{err}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def local_attempts(uri: str) -> list[Path]:
    root = Path(uri, "_attempts")
    return sorted(root.iterdir()) if root.exists() else []


def random_files(directory: Path, names: tuple[str, ...], size: int) -> Path:
    """A new directory of incompressible files (a stand-in checkpoint), so writes and fetches take real I/O."""
    directory.mkdir()
    for name in names:
        (directory / name).write_bytes(os.urandom(size))
    return directory


def assert_uncommitted(uri: str) -> None:
    assert not is_committed(uri)
    with pytest.raises(UncommittedArtifactError, match=uri):
        read_table(uri)


def kill_table_writer(root: str, name: str, hook: str, num_rows: int, rows_per_file: int) -> str:
    """Write `num_rows` rows to <root>/<name> in a writer SIGKILLed at `hook`; check that nothing reads as
    committed, and return the URI."""
    uri = join_uri(root, name)
    rows = f"rows({num_rows}, 'dead')"
    kill_writer_when_ready(hook, f"write_table({uri!r}, {rows}, 'prompts', rows_per_file={rows_per_file})")
    assert_uncommitted(uri)
    return uri


def test_killed_mid_file_leaves_nothing_committed_and_rerun_cleans_up(tmp_store):
    uri = kill_table_writer(tmp_store, "candidates", BLOCK_MID_SECOND_FILE, 40000, 10000)
    (dead,) = local_attempts(uri)
    files = sorted(dead.iterdir())
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.ParquetFile(files[0]).metadata.num_rows == 10000  # the first part was complete...
    with pytest.raises(pa.ArrowException):
        pq.ParquetFile(files[1])  # ...the second is torn: proof the kill landed mid-write

    manifest = write_table(uri, [{"prompt_id": "ok", "prompt": "p", "source": "seed"}], "prompts")
    assert read_table(uri).column("prompt_id").to_pylist() == ["ok"]
    assert all(dead.name not in f.path for f in manifest.files)
    assert local_attempts(uri) == [Path(uri, "_attempts", manifest.attempt_id)]  # the dead attempt is gone


def test_killed_before_commit_then_rerun(tmp_store):
    uri = kill_table_writer(tmp_store, "judgments", BLOCK_BEFORE_COMMIT, 20000, 5000)
    (dead,) = local_attempts(uri)
    assert len(list(dead.iterdir())) == 4  # all data was written; only the commit is missing
    assert sorted(p.name for p in Path(uri).iterdir()) == ["_attempts"]  # no manifest, not even a temp one

    rows = [{"prompt_id": f"r{i}", "prompt": "p", "source": "seed"} for i in range(7)]
    manifest = write_table(uri, rows, "prompts")
    assert read_table(uri).num_rows == 7
    assert local_attempts(uri) == [Path(uri, "_attempts", manifest.attempt_id)]


def test_killed_force_rewrite_keeps_the_committed_version(tmp_store):
    uri = join_uri(tmp_store, "pairs")
    committed = write_table(uri, [{"prompt_id": "v1", "prompt": "p", "source": "seed"}], "prompts")
    kill_writer_when_ready(BLOCK_BEFORE_COMMIT, f"write_table({uri!r}, rows(1000, 'v2'), 'prompts', force=True)")
    assert read_manifest(uri) == committed
    assert read_table(uri, verify=True).column("prompt_id").to_pylist() == ["v1"]
    assert len(local_attempts(uri)) == 2  # the dead v2 attempt sits beside v1 until the next commit


def test_killed_directory_write_then_rerun(tmp_store, tmp_path):
    source = random_files(tmp_path / "ckpt", ("a.bin", "b.bin", "c.bin"), 2_000_000)
    uri = join_uri(tmp_store, "models", "M1")
    kill_writer_when_ready(BLOCK_BEFORE_COMMIT, f"write_directory({uri!r}, {str(source)!r})")
    assert not is_committed(uri)
    with pytest.raises(UncommittedArtifactError):
        fetch_directory(uri)
    (dead,) = local_attempts(uri)

    manifest = write_directory(uri, source)
    fetched = fetch_directory(uri, verify=True)
    assert sorted(p.name for p in fetched.iterdir()) == ["a.bin", "b.bin", "c.bin"]
    assert not dead.exists() and manifest.attempt_id != dead.name


def test_killed_s3_writer_leaves_nothing_committed(s3_store):
    uri = kill_table_writer(s3_store, "candidates", BLOCK_MID_SECOND_FILE, 40000, 10000)
    bucket, prefix = split_s3(uri)
    client = s3_client()

    def listed() -> list[str]:
        response = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
        return sorted(o["Key"] for o in response.get("Contents", []) if not o["Key"].endswith("/"))

    before = listed()
    # only the completed first part is visible; the torn second part never became an object
    assert len(before) == 1 and before[0].endswith("/part-00000.parquet")
    dead_attempt = before[0].split("/_attempts/")[1].split("/")[0]

    manifest = write_table(uri, [{"prompt_id": "ok", "prompt": "p", "source": "seed"}], "prompts")
    assert read_table(uri, verify=True).column("prompt_id").to_pylist() == ["ok"]
    after = listed()
    assert not any(dead_attempt in key for key in after)
    assert after == sorted([f"{prefix}/_SUCCESS"] + [f"{prefix}/{f.path}" for f in manifest.files])
    assert json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/_SUCCESS")["Body"].read())["total_rows"] == 1


def test_damaged_manifest_is_a_store_error(tmp_store):
    uri = join_uri(tmp_store, "t")
    write_table(uri, [{"prompt_id": "a", "prompt": "p", "source": "seed"}], "prompts")
    Path(uri, "_SUCCESS").write_text('{"kind": "table", "fil')
    with pytest.raises(StoreError, match="unreadable manifest"):
        read_table(uri)


# Block after the first file of a fetch has been downloaded into the partial directory.
BLOCK_MID_FETCH = """
import threading
import srlm.store.artifacts as artifacts
artifacts._IO_THREADS = 1
_real_copy = artifacts._copy_verified
_copied = []
def _copy_verified(fs, path, out, entry, uri):
    _real_copy(fs, path, out, entry, uri)
    _copied.append(path)
    if len(_copied) == 1:
        out.flush()
        print("ready", flush=True)
        threading.Event().wait()
artifacts._copy_verified = _copy_verified
"""


def test_killed_fetch_leaves_no_partial_cache_entry(s3_store, tmp_path):
    source = random_files(tmp_path / "ckpt", ("config.json", "model.safetensors", "tokenizer.json"), 500_000)
    uri = join_uri(s3_store, "models", "M0")
    manifest = write_directory(uri, source)
    cache = tmp_path / "cache"
    kill_writer_when_ready(BLOCK_MID_FETCH, f"fetch_directory({uri!r}, cache_dir={str(cache)!r})")
    target = cache / read_manifest(uri).sha256
    assert not target.exists()
    (partial,) = cache.iterdir()  # the dead fetch's half-built copy, under a name no reader uses
    assert partial.name.startswith(f".{target.name}.partial-") and len(list(partial.iterdir())) == 1

    fetched = fetch_directory(uri, cache_dir=cache)
    assert fetched == target
    assert sorted(p.name for p in fetched.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in source.iterdir()
    )
    assert list(cache.iterdir()) == [target]  # the dead fetch's partial copy was removed
    assert manifest.kind == "directory"
