"""The Ray Train engine on a real two-node Ray cluster on this machine: seed SFT and DPO with 2 workers on 2
distinct nodes, the same first-step loss as one process with the same global batch, and a worker killed mid-run
that resumes from its last reported checkpoint and registers M_t once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from srlm.store import RunLayout, is_committed
from srlm.training.launch import TrainingJobSpec, run_training_job
from srlm.training.ray_train import RAY_TRAIN_DIR, run_name
from srlm.training.registry import get_checkpoint, list_checkpoints
from tests.test_training_dpo import write_pairs
from tests.test_training_sft import write_sft_examples

SNAPSHOT = "checkpoint_manager_snapshot.json"  # ray.train.v2 CHECKPOINT_MANAGER_SNAPSHOT_FILENAME
# Dropout 0 and no bf16 autocast, so two runs of the same global batch compute the same loss.
EXACT = dict(dropout=0.0, mixed_precision="no", max_length=96, num_train_epochs=1, seed=7)
RAY = dict(backend="ray", num_processes=2, placement_strategy="STRICT_SPREAD", cpus_per_worker=1, max_failures=1)


def job(store: str, cluster, kind: str, model: str, data: list[str], checkpoint_id: str, **config) -> TrainingJobSpec:
    return TrainingJobSpec(
        kind=kind,
        store_root=store,
        run="exp",
        model=model,
        data_uris=data,
        checkpoint_id=checkpoint_id,
        iteration=0 if kind == "sft" else 1,
        parent_id=None if kind == "sft" else "M0",
        config=config,
        ray_address=cluster.address if cluster else None,
    )


def test_seed_sft_and_dpo_on_two_nodes_match_one_process(ray_two_nodes, tiny_model_dir, tmp_store):
    from transformers import AutoModelForCausalLM

    from srlm.models import resolve_model

    ift = write_sft_examples(f"{tmp_store}/seed/ift", n=8)
    # 2 workers × micro-batch 2 (Ray) and 1 process × micro-batch 2 × accumulation 2 (local): global batch 4.
    sft = dict(EXACT, batch_size=4, per_device_batch_size=2, save_steps=1)
    record = run_training_job(
        job(tmp_store, ray_two_nodes, "sft", str(tiny_model_dir), [ift], "M0", **sft, **{**RAY, "max_failures": 0})
    )
    details = record.details
    assert (record.final, record.step, details["backend"], details["world_size"]) == (True, 2, "ray", 2)
    assert len(details["nodes"]) == 2 and len(set(details["nodes"])) == details["num_nodes"] == 2
    assert details["sharding"] == "ddp" and details["precision"] == {"autocast": "fp32", "master_weights": "fp32"}
    assert details["resumed_from_step"] is None
    layout = RunLayout(tmp_store, "exp")
    assert list_checkpoints(layout).column("checkpoint_id").to_pylist() == ["M0-step1", "M0"]
    AutoModelForCausalLM.from_pretrained(resolve_model(record.uri))

    local = run_training_job(
        job(tmp_store, None, "sft", str(tiny_model_dir), [ift], "M0local", **sft, num_processes=1), echo=False
    )
    assert local.details["backend"] == "local" and local.details["world_size"] == 1
    assert details["loss"]["first_step"] == local.details["loss"]["first_step"] == 1
    assert details["loss"]["first"] == pytest.approx(local.details["loss"]["first"], rel=1e-4)

    pairs = write_pairs(layout.pairs(1), n=4)
    dpo = dict(EXACT, batch_size=4, per_device_batch_size=2, save_steps=1, checkpoint_selection="last")
    # max_failures 0: a 2-node DPO must work in one attempt (a restart would hide a multi-node bug: e.g. a
    # reference log-prob pass that hands rank 0's values to the others through a file only rank 0's node has).
    m1 = run_training_job(
        job(tmp_store, ray_two_nodes, "dpo", record.uri, [pairs], "M1", **dpo, **{**RAY, "max_failures": 0})
    )
    assert (m1.training, m1.parent_id, m1.final, m1.step) == ("dpo", "M0", True, 1)
    assert m1.details["world_size"] == 2 and m1.details["num_nodes"] == 2
    AutoModelForCausalLM.from_pretrained(resolve_model(m1.uri))


def _train_worker_pids(cluster) -> list[int]:
    """The cluster's Ray Train worker processes: titled ray::RayTrainWorker…, descendants of one of its nodes'
    `ray start` processes."""
    nodes = {node.pgid for node in cluster.nodes}  # each node's `ray start` leads its own process group
    pids = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])
        try:
            if "RayTrainWorker" in title and nodes & {parent.pid for parent in proc.parents()}:
                pids.append(proc.info["pid"])
        except psutil.Error:  # gone meanwhile
            continue
    return pids


def _driver_pids() -> list[int]:
    """The Ray Train driver processes (python -m srlm.training.ray_train) this test process started."""
    return [
        child.pid for child in psutil.Process().children(recursive=True)
        if "srlm.training.ray_train" in " ".join(child.cmdline())
    ]  # fmt: skip


def _train_and_kill(spec: TrainingJobSpec, snapshot: Path, checkpoint_dir: str, victims) -> tuple[dict, int | None]:
    """Run `spec` in a thread; once Ray Train has registered `checkpoint_dir` (listed in its snapshot, which
    happens after every worker reported it; its directory appears earlier, during the upload), SIGKILL the
    largest pid of `victims()`. Returns (outcome, the pid killed)."""
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["record"] = run_training_job(spec)
        except BaseException as exc:  # re-raised by the caller
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    killed = None
    deadline = time.monotonic() + 600
    while thread.is_alive() and killed is None and time.monotonic() < deadline:
        if snapshot.is_file() and checkpoint_dir in snapshot.read_text() and (pids := victims()):
            killed = max(pids)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    thread.join(900)
    assert not thread.is_alive()
    return outcome, killed


def test_a_resubmitted_job_and_a_killed_worker_resume_from_the_last_checkpoint(
    ray_two_nodes, tiny_model_dir, tmp_store, capsys
):
    """An Airflow retry (the driver killed, the job submitted again: same run name) and a worker failure
    (FailureConfig restarts the group) both continue from the latest reported checkpoint; M_t is registered once,
    each intermediate save once.

    Ray Train's controller takes one report at a time (every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s) and a worker
    runs at most one report ahead of it. With saves every 2 of 12 steps, the workers are at least two controller
    polls from the end when checkpoint 4 is listed, so the kill lands mid-run however loaded the machine is (with
    6 steps the group could finish and register M0 first, and the "restart" then trained nothing)."""
    ift = write_sft_examples(f"{tmp_store}/seed/ift", n=48)
    planned = 12  # 48 examples / global batch 4
    spec = job(
        tmp_store, ray_two_nodes, "sft", str(tiny_model_dir), [ift], "M0",
        **EXACT, batch_size=4, per_device_batch_size=2, save_steps=2, **RAY,
    )  # fmt: skip
    snapshot = Path(RunLayout(tmp_store, "exp").run_uri) / RAY_TRAIN_DIR / run_name(spec) / SNAPSHOT

    outcome, killed = _train_and_kill(spec, snapshot, "checkpoint-00000002", _driver_pids)
    assert killed is not None and "error" in outcome  # the driver died: the job failed, as a lost Airflow worker's
    assert get_checkpoint(spec.layout, "M0") is None
    capsys.readouterr()

    outcome, killed = _train_and_kill(spec, snapshot, "checkpoint-00000004", lambda: _train_worker_pids(ray_two_nodes))
    if "error" in outcome:
        raise outcome["error"]
    assert killed is not None, "training finished before a worker could be killed"
    output = capsys.readouterr().out
    assert "resumes from the reported checkpoint" in output and "checkpoint-00000002" in output  # the resubmission
    record = outcome["record"]
    assert record.final and record.step == planned
    # The restarted group's, after the worker was killed: checkpoint 4, or 6 if the controller took that report
    # while the victim was being chosen; never the resubmission's 2, and never a run that had already ended.
    assert record.details["resumed_from_step"] in (4, 6)
    ids = list_checkpoints(spec.layout).column("checkpoint_id").to_pylist()
    assert ids == [f"M0-step{step}" for step in range(2, planned, 2)] + ["M0"]  # each save once, M_t once
    assert is_committed(record.uri)
    assert not snapshot.parent.exists()  # a finished job's resumable state is deleted from the store
