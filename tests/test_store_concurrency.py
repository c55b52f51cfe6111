"""Two writers of one artifact: exactly one commits; the other gets the winner's manifest only when it would have
written the same thing (same producer), else a ConcurrentWriteError naming the URI and both attempts. Nobody's
files are deleted while they are still being written. Local (threads and processes) and S3 (moto)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from srlm.errors import ConcurrentWriteError
from srlm.store import artifacts
from srlm.store.filesystems import s3_client
from srlm.store.uri import join_uri, split_s3

REPO_ROOT = Path(__file__).resolve().parent.parent


def rows(tag: str, n: int = 5) -> list[dict]:
    return [{"prompt_id": f"{tag}{i}", "prompt": tag, "source": "seed"} for i in range(n)]


def producer(step: str, **settings) -> dict:
    return {"step": step, "inputs": {}, "settings": settings, "schema_version": 1, "run": step + "-provenance"}


def attempt_ids(uri: str) -> list[str]:
    fs, path = artifacts.filesystem_for(uri)
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(f"{path}/_attempts", allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)


def race(monkeypatch, writers: list) -> list:
    """Run each writer on its own thread; all pass their start check, then all commit at once."""
    barrier = threading.Barrier(len(writers), timeout=120)
    real_commit = artifacts._commit

    def commit_together(*args, **kwargs):
        barrier.wait()
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(artifacts, "_commit", commit_together)
    results: list = [None] * len(writers)

    def run(index: int) -> None:
        try:
            results[index] = writers[index]()
        except Exception as exc:  # the outcome under test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_store) -> str:
    return request.getfixturevalue("s3_store") if request.param == "s3" else tmp_store


def test_moto_honours_if_none_match(s3_store):
    from botocore.exceptions import ClientError

    bucket, prefix = split_s3(s3_store)
    client = s3_client()
    client.put_object(Bucket=bucket, Key=f"{prefix}/k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as error:
        client.put_object(Bucket=bucket, Key=f"{prefix}/k", Body=b"second", IfNoneMatch="*")
    assert error.value.response["Error"]["Code"] == "PreconditionFailed"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/k")["Body"].read() == b"first"


@pytest.mark.parametrize("force", [False, True])
def test_racing_writers_with_different_producers_one_wins(root, monkeypatch, force):
    uri = join_uri(root, "judgments")
    tags = ["a", "b", "c"]
    # Force writers all judged "nothing committed" (replaces=None), as two DAG runs that start together do.
    extra = {"force": True, "replaces": None} if force else {}
    results = race(
        monkeypatch,
        [
            lambda tag=tag: artifacts.write_table(uri, rows(tag), "prompts", producer=producer("p", tag=tag), **extra)
            for tag in tags
        ],
    )
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1 and len(losers) == 2
    assert all(isinstance(e, ConcurrentWriteError) for e in losers)
    (winner,) = winners
    for error in losers:
        message = str(error)
        assert message.startswith(f"{uri}: committed meanwhile by another writer with a different producer")
        assert winner.attempt_id in message and "was discarded" in message and "\n" not in message
    committed = artifacts.read_manifest(uri)
    assert committed == winner
    tag = winner.producer["settings"]["tag"]
    assert artifacts.read_table(uri).column("prompt_id").to_pylist() == [f"{tag}{i}" for i in range(5)]
    assert attempt_ids(uri) == [winner.attempt_id]  # the losers removed their own attempts


def test_racing_writers_with_the_same_producer_share_the_winner(root, monkeypatch):
    uri = join_uri(root, "pairs")
    results = race(
        monkeypatch,
        [lambda: artifacts.write_table(uri, rows("x"), "prompts", producer=producer("pairs", beta=1))] * 2,
    )
    assert not any(isinstance(r, Exception) for r in results)
    assert results[0] == results[1] == artifacts.read_manifest(uri)
    assert attempt_ids(uri) == [results[0].attempt_id]


def test_a_later_non_force_writer_of_another_producer_is_refused(root):
    uri = join_uri(root, "t")
    first = artifacts.write_table(uri, rows("a"), "prompts", producer=producer("p", tag="a"))
    assert artifacts.write_table(uri, rows("zzz"), "prompts", producer=producer("p", tag="a")) == first
    with pytest.raises(ConcurrentWriteError, match=f"{uri}: already committed by a different producer"):
        artifacts.write_table(uri, rows("b"), "prompts", producer=producer("p", tag="b"))
    assert artifacts.read_manifest(uri) == first


def test_force_replaces_what_it_judged_and_refuses_what_it_did_not(root):
    uri = join_uri(root, "t")
    old = artifacts.write_table(uri, rows("old"), "prompts", producer=producer("p", tag="old"))
    # A recompute that judged `old` stale replaces it (the default judges whatever is committed at the call).
    new = artifacts.write_table(uri, rows("new"), "prompts", producer=producer("p", tag="new"), force=True)
    assert artifacts.read_manifest(uri) == new
    # A recompute that judged `old` stale, while another writer already replaced it with `new`, does not clobber it.
    with pytest.raises(ConcurrentWriteError, match="committed meanwhile"):
        artifacts.write_table(
            uri, rows("late"), "prompts", producer=producer("p", tag="late"), force=True, replaces=old.sha256
        )
    assert artifacts.read_manifest(uri) == new
    assert attempt_ids(uri) == [new.attempt_id]


def test_a_live_writers_attempt_is_never_deleted_by_another_commit(tmp_store, monkeypatch):
    uri = join_uri(tmp_store, "t")
    entered, release = threading.Event(), threading.Event()
    real_commit = artifacts._commit

    def slow_commit(target, manifest, **kwargs):
        if manifest.producer.get("settings", {}).get("tag") == "slow":
            entered.set()
            assert release.wait(120)
        return real_commit(target, manifest, **kwargs)

    monkeypatch.setattr(artifacts, "_commit", slow_commit)
    outcome: list = []

    def slow_writer() -> None:
        try:
            outcome.append(artifacts.write_table(uri, rows("s"), "prompts", producer=producer("p", tag="slow")))
        except ConcurrentWriteError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert entered.wait(120)
    (slow_attempt,) = attempt_ids(uri)
    fast = artifacts.write_table(uri, rows("f"), "prompts", producer=producer("p", tag="fast"))
    assert sorted(attempt_ids(uri)) == sorted([slow_attempt, fast.attempt_id])  # still being written: kept
    release.set()
    thread.join(120)
    assert isinstance(outcome[0], ConcurrentWriteError) and slow_attempt in str(outcome[0])
    assert attempt_ids(uri) == [fast.attempt_id]
    assert artifacts.read_table(uri).column("prompt_id").to_pylist() == [f"f{i}" for i in range(5)]


# Two processes: each announces "ready" once its data is written and waits for the parent's go file before
# committing, so both commit at the same moment through the real os.link / conditional PUT.
RACER = """
import json, os, sys, time
import srlm.store.artifacts as artifacts
from srlm.errors import ConcurrentWriteError
uri, tag, go = sys.argv[1], sys.argv[2], sys.argv[3]
real_commit = artifacts._commit
def commit_on_go(*args, **kwargs):
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    return real_commit(*args, **kwargs)
artifacts._commit = commit_on_go
rows = [{"prompt_id": f"{tag}{i}", "prompt": tag, "source": "seed"} for i in range(100)]
try:
    manifest = artifacts.write_table(uri, rows, "prompts", producer={"step": "p", "settings": {"tag": tag}})
    print(json.dumps({"won": manifest.attempt_id}), flush=True)
except ConcurrentWriteError as exc:
    print(json.dumps({"lost": str(exc)}), flush=True)
"""


def test_two_processes_racing_on_one_uri(root, tmp_path):
    uri = join_uri(root, "candidates")
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(RACER), uri, tag, str(go)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for tag in ("a", "b")
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.write_text("go")
        outcomes = [json.loads(proc.stdout.readline() or "{}") for proc in procs]
        for proc in procs:
            assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        for proc in procs:
            if psutil.pid_exists(proc.pid) and proc.poll() is None:
                psutil.Process(proc.pid).kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    assert sorted(next(iter(o)) for o in outcomes) == ["lost", "won"]
    (won,) = [o["won"] for o in outcomes if "won" in o]
    (lost,) = [o["lost"] for o in outcomes if "lost" in o]
    assert lost.startswith(f"{uri}: committed meanwhile") and won in lost
    assert artifacts.read_manifest(uri).attempt_id == won
    assert attempt_ids(uri) == [won]
    assert artifacts.read_table(uri).num_rows == 100


def test_stale_attempt_rules(monkeypatch):
    own = artifacts._new_attempt_id()
    assert artifacts._attempt_is_stale(own)  # this process, not being written: a failed write's leftover
    with artifacts._live_lock:
        artifacts._live_attempts.add(own)
    try:
        assert not artifacts._attempt_is_stale(own)
    finally:
        with artifacts._live_lock:
            artifacts._live_attempts.discard(own)
    dead = psutil.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    assert artifacts._attempt_is_stale(f"{stamp}-{artifacts._HOST}-{dead.pid}-abc")
    assert not artifacts._attempt_is_stale(f"{stamp}-{artifacts._HOST}-1-abc")  # pid 1 is alive
    assert not artifacts._attempt_is_stale(f"{stamp}-otherhost-123-abc")  # another host's, recent: kept
    old = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - artifacts.STALE_ATTEMPT_SECONDS - 60))
    assert artifacts._attempt_is_stale(f"{old}-otherhost-123-abc")
    assert artifacts._attempt_is_stale("20250101T000000-0123456789ab")  # the old id format


def test_a_failed_write_removes_its_own_attempt(tmp_store, monkeypatch):
    uri = join_uri(tmp_store, "t")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts.pq, "write_table", disk_full)
    with pytest.raises(artifacts.StoreError, match=f"{uri}: cannot write table: .*No space left"):
        artifacts.write_table(uri, rows("a"), "prompts")
    assert attempt_ids(uri) == [] and not artifacts.is_committed(uri)


def test_without_hard_links_the_commit_is_still_exclusive(tmp_store, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(artifacts.os, "link", no_links)
    uri = join_uri(tmp_store, "t")
    first = artifacts.write_table(uri, rows("a"), "prompts", producer=producer("p", tag="a"))
    assert artifacts._write_atomic(join_uri(uri, "_SUCCESS"), b"{}", exclusive=True) is False
    assert artifacts.read_manifest(uri) == first


def test_an_s3_endpoint_without_conditional_writes_still_commits_with_a_warning(s3_store, monkeypatch, caplog):
    from botocore.exceptions import ClientError

    real_client = artifacts.s3_client()

    class NoConditionalWrites:
        def put_object(self, **request):
            if "IfNoneMatch" in request or "IfMatch" in request:
                raise ClientError({"Error": {"Code": "NotImplemented", "Message": "not here"}}, "PutObject")
            return real_client.put_object(**request)

    monkeypatch.setattr(artifacts, "s3_client", NoConditionalWrites)
    uri = join_uri(s3_store, "t")
    manifest = artifacts.write_table(uri, rows("a"), "prompts")
    assert artifacts.read_manifest(uri) == manifest
    assert "does not support conditional writes" in caplog.text


# ------------------------------------------------------------------------- a step's computation is the race window


def _commit_meanwhile(uri: str, step_producer: dict, tag: str) -> None:
    """Another writer (a second DAG run of the same run name) commits `uri` while this one computes."""
    artifacts.write_table(uri, rows(tag), "prompts", producer=step_producer, force=True)


@pytest.mark.parametrize("same_producer", [True, False])
def test_a_sharded_step_does_not_replace_a_shard_committed_while_it_computed(tmp_store, same_producer):
    from srlm.steps.reuse import run_sharded

    uri = join_uri(tmp_store, "runs/r/iterations/001/prompts")
    ours = producer("generate", temperature=0.7)
    theirs = ours if same_producer else producer("generate", temperature=0.9)
    items = [{"prompt_id": f"p{i}"} for i in range(4)]

    def make_shard(chunk, _run):
        if chunk[0]["prompt_id"] == "p0":  # shard 0: the other writer gets there first
            _commit_meanwhile(artifacts.shard_uri(uri, 0), theirs, "p")
        return [{"prompt_id": item["prompt_id"], "prompt": "ours", "source": "seed"} for item in chunk]

    def run():
        return run_sharded(
            uri, items, 5, schema_name="prompts", key_column="prompt_id", make_shard=make_shard,
            producer=ours, what="generate",
        )  # fmt: skip

    if same_producer:
        run()  # stands on the other writer's shard: the same producer made it
        table = artifacts.read_table(uri, "prompts")
        assert set(table.column("prompt").to_pylist()) == {"p"}  # theirs, not replaced by ours
    else:
        with pytest.raises(ConcurrentWriteError, match="shards/00000"):
            run()
        assert not artifacts.is_committed(uri)
        assert artifacts.read_manifest(artifacts.shard_uri(uri, 0)).producer["settings"] == {"temperature": 0.9}


def test_an_evaluation_result_committed_meanwhile_by_the_same_producer_is_kept(tmp_store):
    """`srlm eval` and the evaluate DAG computing one result: the first commit stands, the second returns it."""
    from srlm.evaluation.results import EvalRecord, ResultTarget, record_result, result_producer
    from srlm.store.layout import RunLayout

    layout = RunLayout(tmp_store, "r")
    target = ResultTarget(layout, "M1")
    made_by = result_producer(layout, "M1", "monitors", "v1", settings={"k": 1})
    first = record_result(target, "monitors", EvalRecord(metrics={"m": 1.0}), made_by)
    sha = artifacts.read_manifest(first).sha256
    second = record_result(target, "monitors", EvalRecord(metrics={"m": 2.0}), made_by)
    assert second == first and artifacts.read_manifest(first).sha256 == sha
    assert artifacts.read_table(first).column("value").to_pylist() == [1.0]
    # A result of another producer is the stale one a recomputation replaces; force replaces in any case.
    changed = result_producer(layout, "M1", "monitors", "v1", settings={"k": 2})
    record_result(target, "monitors", EvalRecord(metrics={"m": 3.0}), changed)
    assert artifacts.read_table(first).column("value").to_pylist() == [3.0]
    record_result(ResultTarget(layout, "M1", force=True), "monitors", EvalRecord(metrics={"m": 4.0}), changed)
    assert artifacts.read_table(first).column("value").to_pylist() == [4.0]
