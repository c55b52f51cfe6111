"""The Ray Train engine (`backend: ray`): one training job as a Ray Train `TorchTrainer` of num_processes workers.

    python -m srlm.training.ray_train {sft,dpo} --spec SPEC.json [--force]

This module is the driver, run in its own process like srlm.training.launch (the caller never imports torch or
Ray). It connects to the Ray cluster of `spec.ray_address` / RAY_ADDRESS (inside a Ray job the address is set) or
starts a local head the way srlm.generation.ray_cluster does, and runs the TorchTrainer. Ray Train places the
workers (`placement_strategy`, `resources_per_worker`), sets RANK / WORLD_SIZE / LOCAL_RANK and creates the
process group (gloo on CPU, nccl on GPU) that accelerate and the HF Trainer then use; multi-node is a matter of
the cluster having nodes. Each worker calls srlm.training.launch.execute, so the artifact layout, the intermediate
`<id>-step<N>` checkpoints and the registration are those of a local run; only rank 0 writes to the store.

Fault tolerance: every save_steps the Trainer's resumable state (weights, optimizer, scheduler, RNG, data
position) is reported to Ray Train as a checkpoint (each worker's files merged into one directory under
`<run>/_ray_train/<name>` in the store: a place every node reaches). When a worker dies, FailureConfig restarts the
group, which resumes from the latest reported checkpoint. The run name is derived from the store, the run and the
checkpoint id, so a resubmitted job (an Airflow retry) finds the same run and Ray Train hands it that checkpoint too
(Ray Train v2 restores a run from its checkpoint manager snapshot in storage); --force starts the run over. Once
M_t is registered the stored run is deleted: nothing resumes a finished job, and its resumable state (weights plus
optimizer state) is several times the model's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from srlm.errors import SrlmError
from srlm.training.launch import TrainingJobSpec

log = logging.getLogger(__name__)

# Under the run's URI in the store: Ray Train's run directories (resumable checkpoints, its snapshots).
RAY_TRAIN_DIR = "_ray_train"
# The environment the store reads (srlm.store.filesystems), forwarded to the workers: a driver outside a Ray job (a
# laptop attached to a cluster) must give its workers the store it was given. Passed as runtime_env env_vars, as
# srlm.orchestration.ray_jobs passes a step's store credentials to its Ray job.
STORE_ENV_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    "AWS_REGION", "AWS_DEFAULT_REGION",
)  # fmt: skip


def run_name(spec: TrainingJobSpec) -> str:
    """The Ray Train run name of `spec`'s job: the same for every submission of the same checkpoint of the same
    run and store, so a resubmitted job resumes the stored run."""
    digest = hashlib.sha256(f"{spec.store_root}\0{spec.run}\0{spec.checkpoint_id}".encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", f"{spec.run}-{spec.checkpoint_id}")
    return f"srlm-{spec.kind}-{readable}-{digest}"


def storage(spec: TrainingJobSpec) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: `<run>/_ray_train` in the store, which every node reaches
    (a local store must then be on a filesystem all nodes mount). S3: the store's own pyarrow S3FileSystem
    (endpoint and region from the store settings, credentials from the environment). Local: an absolute path and
    no filesystem (Ray Train's default)."""
    from srlm.store import configure_store
    from srlm.store.filesystems import filesystem_for
    from srlm.store.uri import is_s3, join_uri

    configure_store(spec.validated_config().store)
    uri = join_uri(spec.layout.run_uri, RAY_TRAIN_DIR)
    filesystem, path = filesystem_for(uri)
    if is_s3(uri):
        return path, filesystem
    return os.path.abspath(path), None


def fit(spec: TrainingJobSpec, *, force: bool = False):
    """Run `spec` as a Ray Train job and return the registered CheckpointRecord (None only if rank 0 registered
    nothing, which the caller reports)."""
    from ray.train import TrainingFailedError

    from srlm.generation import ray_cluster
    from srlm.training.registry import get_checkpoint

    section = spec.section()
    owns_head = ray_cluster.connect(spec.ray_address)
    try:
        trainer = _trainer(spec, section, force=force)
        started = time.perf_counter()
        try:
            trainer.fit()
        except TrainingFailedError as exc:  # the workers failed more than max_failures times
            raise SrlmError(f"{spec.kind} training of {spec.checkpoint_id} on Ray Train failed: {exc}") from exc
        log.info("Ray Train job %s finished in %.1fs", run_name(spec), time.perf_counter() - started)
    finally:
        if owns_head:
            ray_cluster.release()
    record = get_checkpoint(spec.layout, spec.checkpoint_id)
    if record is not None and record.final:
        # M_t is registered, so nothing will resume this run: its resumable state (weights and optimizer state,
        # several times the model's size) would only fill the store.
        _forget_run(*storage(spec), run_name(spec))
    return record


def _trainer(spec: TrainingJobSpec, section: Any, *, force: bool):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from srlm.generation import ray_cluster

    use_gpu = section.use_gpu if section.use_gpu is not None else ray_cluster.has_gpus()
    resources = {"CPU": section.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    storage_path, filesystem = storage(spec)
    name = run_name(spec)
    if force:
        _forget_run(storage_path, filesystem, name)
    log.info(
        "Ray Train job %s: %d worker(s) × %s, placement %s, max_failures %d, storage %s",
        name, section.num_processes, resources, section.placement_strategy, section.max_failures,
        f"{storage_path}/{name}",
    )  # fmt: skip
    return TorchTrainer(
        _worker_loop,
        train_loop_config={"spec": spec.to_json(), "force": force, "submitted_at": time.time(), "run_name": name},
        scaling_config=ScalingConfig(
            num_workers=section.num_processes,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            placement_strategy=section.placement_strategy,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=section.max_failures),
            # Only the latest resumable state is needed; older ones are deleted once a newer one is reported.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            worker_runtime_env={"env_vars": {key: os.environ[key] for key in STORE_ENV_VARS if os.environ.get(key)}},
        ),
    )


def _forget_run(storage_path: str, filesystem: Any, name: str) -> None:
    """Delete the stored Ray Train run `name` (a forced retrain starts over instead of resuming it; a finished
    job's resumable state is no longer needed)."""
    import pyarrow.fs

    filesystem = filesystem or pyarrow.fs.LocalFileSystem()
    path = f"{storage_path}/{name}"
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        log.info("deleting the stored Ray Train run %s", path)
        filesystem.delete_dir(path)


# ------------------------------------------------------------------------------------------------ in each worker


def _worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker: resume from the latest reported checkpoint if there is one, then train
    and (rank 0) commit and register through srlm.training.launch.execute."""
    import ray.train
    import ray.train.torch

    from srlm.training.common import TrainerRuntime
    from srlm.training.launch import execute

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = TrainingJobSpec.from_json(config["spec"], "Ray Train job spec")
    rank = ray.train.get_context().get_world_rank()
    if ray.train.torch.get_device().type == "cpu":
        # Ray Train made a gloo process group, but accelerate treats a CPU job as distributed (MULTI_CPU, sharded
        # data, DDP) only when told it runs on CPU; otherwise every worker would train alone on all the data.
        os.environ["ACCELERATE_USE_CPU"] = "true"
    # Each worker its own scratch directory on its own node: Trainer saves there and rank 0 exports from there.
    work_dir = Path(tempfile.mkdtemp(prefix=f"srlm-{spec.kind}-rank{rank}-"))
    try:
        resume_from = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            resume_from = checkpoint.to_directory(str(work_dir / "resume"))
            log.info("rank %d resumes from the reported checkpoint %s", rank, checkpoint.path)
        runtime = TrainerRuntime(
            callbacks=[_report_saves_callback()], resumable_saves=True, resume_from=resume_from
        )
        nodes = _worker_nodes()
        details = {"backend": "ray", "nodes": nodes, "num_nodes": len(set(nodes)), "ray_run": config["run_name"]}
        force = config["force"] and not _registered_since(spec, config["submitted_at"])
        execute(dataclasses.replace(spec, work_dir=str(work_dir)), force=force, runtime=runtime, details=details)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _registered_since(spec: TrainingJobSpec, submitted_at: float) -> bool:
    """Whether this submission already registered the final checkpoint (a worker group restarted after rank 0
    registered it): a forced job must not train it a second time."""
    from srlm.training.registry import get_checkpoint

    record = get_checkpoint(spec.layout, spec.checkpoint_id)
    return record is not None and record.final and record.created_at.timestamp() >= submitted_at


def _worker_nodes() -> list[str]:
    """The Ray node id of every worker, in rank order (a collective over the process group Ray Train set up)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()):
        return [node]
    nodes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return [str(n) for n in nodes]


def _report_saves_callback() -> Any:
    """A TrainerCallback reporting each resumable save (<output_dir>/checkpoint-N) to Ray Train. Every worker
    reports its own directory (rank 0: weights, optimizer, scheduler, trainer state; every rank: its RNG state);
    Ray Train merges them into one stored checkpoint, which each worker of a restarted group downloads whole."""
    import ray.train
    from transformers import TrainerCallback

    class ReportSavesToRayTrain(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            metrics = {"step": state.global_step, **(state.log_history[-1] if state.log_history else {})}
            checkpoint = ray.train.Checkpoint.from_directory(str(directory)) if directory.is_dir() else None
            # Every worker calls report at every save (it is a barrier); the directory name merges their files.
            ray.train.report(
                metrics,
                checkpoint=checkpoint,
                checkpoint_dir_name=f"checkpoint-{state.global_step:08d}",
                delete_local_checkpoint_after_upload=checkpoint is not None,
            )

    return ReportSavesToRayTrain()


# ------------------------------------------------------------------------------------------------ the driver process


def main(argv: list[str] | None = None) -> int:
    from srlm.training.launch import main as job_main

    return job_main(argv, engine=fit, prog="python -m srlm.training.ray_train")


if __name__ == "__main__":
    sys.exit(main())
