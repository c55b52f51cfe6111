"""Run one training job (SFT or DPO) as its own process: resolve the input model, train, commit the checkpoint to the
store and register it.

    python -m srlm.training.launch {sft,dpo} --spec SPEC.json [--force]

Training runs in a separate process so the caller (CLI, pipeline step, Airflow worker) never holds torch/CUDA state
and a crash or OOM in training cannot take the caller down. The section's `backend` picks the engine: `local` runs
this module (under `accelerate launch`, one process per GPU, when num_processes > 1); `ray` runs
srlm.training.ray_train, a Ray Train driver whose workers call `execute` here. Either way only rank 0 writes to the
store, and the registry records how the checkpoint was trained (CheckpointRecord.details).

Idempotent: a checkpoint already committed and registered as final is not trained again (exit 0) unless --force.
Intermediate saves become `<checkpoint_id>-step<N>` artifacts, registered with final=False.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlm.checkpoint_ids import step_checkpoint_id
from srlm.errors import ConfigError, SrlmError
from srlm.json_objects import check_fields, load_json_object

if TYPE_CHECKING:
    from srlm.training.common import TrainerRuntime

log = logging.getLogger(__name__)

KINDS = ("sft", "dpo")
# Lines of a failed job's output quoted in the error.
ERROR_TAIL_LINES = 15


@dataclass
class TrainingJobSpec:
    """Everything a training process needs; serialised as JSON (--spec) so it crosses process and pod boundaries."""

    kind: str = field(metadata={"help": "sft (seed fine-tuning → M0) or dpo (one self-rewarding iteration)."})
    store_root: str = field(metadata={"help": "Store root URI of the run (RunLayout.root)."})
    run: str = field(metadata={"help": "Run name (RunLayout.run)."})
    model: str = field(
        metadata={"help": "Input model: checkpoint artifact URI, local HF directory, known alias or hub id."}
    )
    data_uris: list[str] = field(
        metadata={"help": "sft: sft_examples table URIs (IFT, EFT); dpo: exactly one pairs table URI."}
    )
    checkpoint_id: str = field(metadata={"help": "Id of the checkpoint this job produces (M0, M1, …)."})
    iteration: int = field(metadata={"help": "Iteration the checkpoint belongs to (0 for the seed SFT)."})
    parent_id: str | None = field(default=None, metadata={"help": "Registered id of the input model, if any."})
    config: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "The sft or dpo config section (srlm.config.SFTTrainingConfig / DPOTrainingConfig)."},
    )
    ref_model: str | None = field(default=None, metadata={"help": "dpo: reference model (default: the input model)."})
    store: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "StoreConfig fields (S3 endpoint/region); credentials stay in env."}
    )
    model_cache_dir: str | None = field(default=None, metadata={"help": "config.model.cache_dir."})
    ray_address: str | None = field(
        default=None,
        metadata={"help": "backend ray: config.backend.ray_address (None: RAY_ADDRESS, else a local Ray head)."},
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "config.model.chat_template (a built-in name or a Jinja file), if any."}
    )
    work_dir: str | None = field(
        default=None, metadata={"help": "Local scratch directory shared by all ranks (default: a temp dir)."}
    )
    max_steps: int | None = field(default=None, metadata={"help": "Cap on optimizer steps (smoke runs)."})
    producer: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "The asking step's producer (srlm.steps.reuse), kept in the checkpoint's manifest: its "
                  "fingerprint decides when the checkpoint is stale."},
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"training job spec: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if isinstance(self.data_uris, str):
            self.data_uris = [self.data_uris]
        if not self.data_uris:
            raise ConfigError("training job spec: data_uris is empty")
        if self.kind == "dpo" and len(self.data_uris) != 1:
            raise ConfigError(f"training job spec: dpo takes exactly one pairs table, got {len(self.data_uris)} URIs")

    @property
    def layout(self):
        from srlm.store import RunLayout

        return RunLayout(self.store_root, self.run)

    @property
    def output_uri(self) -> str:
        return self.layout.model(self.checkpoint_id)

    def validated_config(self):
        """The store settings and the sft/dpo section as one validated SRLMConfig: the same rules as a YAML config
        (unknown keys, ranges, batch divisibility), checked before any model or data is touched."""
        from srlm.config import config_from_dict

        return config_from_dict({"store": dict(self.store), self.kind: dict(self.config)}, "training job spec")

    def section(self):
        """The typed, validated sft/dpo config section."""
        return getattr(self.validated_config(), self.kind)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "spec") -> TrainingJobSpec:
        data = check_fields(load_json_object(text, source), cls, source)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ in the job process


def execute(
    spec: TrainingJobSpec,
    *,
    force: bool = False,
    runtime: TrainerRuntime | None = None,
    details: dict[str, Any] | None = None,
):
    """Train and register `spec`'s checkpoint in this process (all ranks call it); returns the registry record on
    rank 0 (None elsewhere). `runtime` is what the engine adds to the trainer (Ray Train: reporting resumable saves,
    resuming one); `details` what it knows of the job beyond this process (Ray Train: the workers' nodes), merged
    into the registry record's details."""
    from srlm.store import configure_store
    from srlm.training.registry import get_checkpoint

    config = spec.validated_config()
    configure_store(config.store)
    cfg = getattr(config, spec.kind)
    layout = spec.layout
    if not force and _finished(spec):
        log.info("%s is already trained and registered; nothing to do", spec.checkpoint_id)
        return get_checkpoint(layout, spec.checkpoint_id) if _is_main() else None
    _check_inputs(spec)
    is_main = _is_main()
    work_dir = Path(spec.work_dir) if spec.work_dir else Path(tempfile.mkdtemp(prefix=f"srlm-{spec.kind}-"))
    output_dir = work_dir / spec.checkpoint_id
    try:
        final = _train(spec, cfg, output_dir, force=force, runtime=runtime)
        if not is_main:
            return None
        from srlm.training.data import read_sft_fit
        from srlm.training.selection import read_selection

        record_details = {**training_details(cfg, spec.kind, runtime), **(details or {})}
        record_details["loss"] = _loss_summary(output_dir)
        sft_fit = read_sft_fit(output_dir)
        if sft_fit is not None:  # SFT: the examples dropped as longer than max_length
            record_details["sft_fit"] = sft_fit
        steps = _trained_steps(output_dir)
        selection = read_selection(output_dir)
        if selection is not None:  # checkpoint selection ran: M_t is the selected step's model (last or earlier)
            record_details["selection"] = selection
            record_details["trained_steps"] = steps
            steps = int(selection["selected_step"])
        _commit_and_register(
            spec, final, step=steps, final=True, checkpoint_id=spec.checkpoint_id, force=force, details=record_details
        )
        return get_checkpoint(layout, spec.checkpoint_id)
    finally:
        if is_main and not spec.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def _check_inputs(spec: TrainingJobSpec) -> None:
    """Fail in a second, before torch is imported, when the training data is not there."""
    from srlm.errors import DataError
    from srlm.store import is_committed

    for uri in spec.data_uris:
        if not is_committed(uri):
            raise DataError(f"{uri}: training data is not a committed table (was the step that writes it run?)")


def _finished(spec: TrainingJobSpec) -> bool:
    """Whether the checkpoint is committed and registered as final. One committed but not registered (a job killed
    between the two) is registered now (by rank 0) instead of being trained again. Every rank gets the same
    answer, so either all train or none do."""
    from srlm.store import is_committed
    from srlm.training.registry import get_checkpoint

    record = get_checkpoint(spec.layout, spec.checkpoint_id)
    if record is not None:
        return record.final and is_committed(record.uri)
    if not is_committed(spec.output_uri):
        return False
    if _is_main():
        _register(spec, spec.checkpoint_id, step=None, final=True, force=False)
    return True


def _is_main() -> bool:
    """Rank 0 of an accelerate/torchrun/Ray Train job, or a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def training_details(cfg: Any, section: str, runtime: TrainerRuntime | None) -> dict[str, Any]:
    """How this process's job trains, for the registry: engine, world size, nodes, precision, sharding, and the
    step an interrupted attempt was resumed from. The Ray engine overrides `backend` and `nodes` with what its
    workers report."""
    from srlm.training.common import job_sharding, use_bf16, world_size

    return {
        "backend": "local",
        "world_size": world_size(),
        "nodes": [platform.node()],  # local: accelerate launch --num_machines 1
        "num_nodes": 1,
        "precision": {
            "autocast": "bf16" if use_bf16(cfg.mixed_precision, section) else "fp32",
            "master_weights": cfg.master_weights,
        },
        "sharding": job_sharding(cfg),
        "resumed_from_step": resumed_step(runtime.resume_from) if runtime and runtime.resume_from else None,
    }


def resumed_step(checkpoint_dir: str | Path) -> int | None:
    """The optimizer step a Trainer checkpoint directory was saved at (its trainer_state.json)."""
    try:
        return int(json.loads((Path(checkpoint_dir) / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return None


def _train(
    spec: TrainingJobSpec, cfg: Any, output_dir: Path, *, force: bool, runtime: TrainerRuntime | None = None
) -> Path:
    from srlm.models import resolve_model
    from srlm.models.chat_templates import resolve_chat_template
    from srlm.training.common import TrainerRuntime

    model_path = resolve_model(spec.model, spec.model_cache_dir)
    runtime = runtime or TrainerRuntime()
    if spec.chat_template:
        runtime = dataclasses.replace(runtime, chat_template=resolve_chat_template(spec.chat_template))

    def on_checkpoint(step: int, directory: Path) -> str:
        checkpoint_id = step_checkpoint_id(spec.checkpoint_id, step)
        _commit_and_register(spec, directory, step=step, final=False, checkpoint_id=checkpoint_id, force=force)
        if spec.kind == "sft":
            shutil.rmtree(directory, ignore_errors=True)  # in the store now; keep local disk bounded
        # dpo: checkpoint selection (srlm.training.selection) still scores this directory and deletes the ones it
        # does not keep.
        return checkpoint_id

    if spec.kind == "sft":
        from srlm.training.sft import train_sft

        return train_sft(
            model_path, spec.data_uris, output_dir, cfg, on_checkpoint=on_checkpoint, max_steps=spec.max_steps,
            runtime=runtime,
        )
    from srlm.training.dpo import train_dpo

    ref_path = resolve_model(spec.ref_model, spec.model_cache_dir) if spec.ref_model else None
    return train_dpo(
        model_path,
        spec.data_uris[0],
        output_dir,
        cfg,
        ref_model_path=ref_path,
        on_checkpoint=on_checkpoint,
        max_steps=spec.max_steps,
        runtime=runtime,
    )


def _commit_and_register(
    spec: TrainingJobSpec,
    directory: Path,
    *,
    step: int | None,
    final: bool,
    checkpoint_id: str,
    force: bool,
    details: dict[str, Any] | None = None,
) -> None:
    from srlm.store import write_directory

    # work_dir is where this attempt trains (a fresh temporary directory per try and per Ray Train worker group), not
    # what it produced: with it, a save that a restarted job makes again would read as another producer's.
    job = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("producer", "work_dir")}
    producer = {"config": spec.config, **spec.producer, "training_job": job}
    write_directory(spec.layout.model(checkpoint_id), directory, kind="checkpoint", producer=producer, force=force)
    _register(spec, checkpoint_id, step=step, final=final, force=force, details=details)


def _register(
    spec: TrainingJobSpec,
    checkpoint_id: str,
    *,
    step: int | None,
    final: bool,
    force: bool,
    details: dict[str, Any] | None = None,
):
    from srlm.training.registry import register_checkpoint

    return register_checkpoint(
        spec.layout,
        checkpoint_id,
        iteration=spec.iteration,
        uri=spec.layout.model(checkpoint_id),
        parent_id=spec.parent_id,
        training=spec.kind,
        step=step,
        final=final,
        data_uri=",".join(spec.data_uris),
        config=dataclasses.asdict(spec.section()),
        details=details,
        force=force,
    )


def _loss_summary(output_dir: Path) -> dict[str, Any] | None:
    """The training loss at the first and the last logged step (from the Trainer's log history)."""
    try:
        history = json.loads((output_dir / "training_log.json").read_text())["log"]
    except (OSError, ValueError, KeyError):
        return None
    losses = [(int(entry["step"]), float(entry["loss"])) for entry in history if "loss" in entry and "step" in entry]
    if not losses:
        return None
    return {"first_step": losses[0][0], "first": losses[0][1], "last_step": losses[-1][0], "last": losses[-1][1]}


def _trained_steps(output_dir: Path) -> int | None:
    try:
        return int(json.loads((output_dir / "training_log.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return None


def main(argv: list[str] | None = None, *, engine: Callable[..., Any] | None = None, prog: str | None = None) -> int:
    """The job process's command line; `engine(spec, force=…)` trains and returns the record (default: execute,
    in this process; srlm.training.ray_train passes its Ray Train driver)."""
    engine = engine or execute
    parser = argparse.ArgumentParser(
        prog=prog or "python -m srlm.training.launch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--spec", required=True, metavar="SPEC.json", help="TrainingJobSpec as JSON.")
    parser.add_argument("--force", action="store_true", help="Train again even if the checkpoint is registered.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        path = Path(args.spec)
        if not path.is_file():
            raise ConfigError(f"{path}: spec file not found")
        spec = TrainingJobSpec.from_json(path.read_text(), str(path))
        if spec.kind != args.kind:
            raise ConfigError(f"{path}: spec is for {spec.kind!r} but {args.kind!r} was asked for")
        record = engine(spec, force=args.force)
    except SrlmError as exc:
        print(f"srlm training: error: {exc}", file=sys.stderr)
        return 1
    if record is not None:
        print(f"srlm training: {record.checkpoint_id} registered at {record.uri}")
    return 0


# ------------------------------------------------------------------------------------------------ in the caller


def run_training_job(
    spec: TrainingJobSpec, num_processes: int | None = None, *, force: bool = False, echo: bool = True
):
    """Run `spec` in a child process (backend local: under `accelerate launch` when num_processes > 1; backend ray:
    a Ray Train driver, srlm.training.ray_train), streaming its output to this process's stdout, and return the
    registered CheckpointRecord. A failed job raises SrlmError quoting the last lines of its output."""
    from srlm.training.registry import get_checkpoint

    section = spec.section()  # a bad config fails here, before a training process starts
    if num_processes is None:
        num_processes = section.num_processes
    if num_processes < 1:
        raise ConfigError(f"{spec.kind}.num_processes: must be at least 1, got {num_processes}")
    if not force:
        # Checked here too so a finished job costs no process start (the child checks again, authoritatively).
        if _finished(spec):
            record = get_checkpoint(spec.layout, spec.checkpoint_id)
            log.info("%s is already trained and registered (%s); nothing to do", spec.checkpoint_id, record.uri)
            return record
    with tempfile.TemporaryDirectory(prefix=f"srlm-{spec.kind}-job-") as tmp:
        job = dataclasses.replace(spec, work_dir=spec.work_dir or str(Path(tmp) / "work"))
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(job.to_json())
        command = _command(spec.kind, spec_path, num_processes, force, backend=section.backend)
        log.info("starting %s training of %s: %s", spec.kind, spec.checkpoint_id, " ".join(command))
        returncode, tail = _stream(command, echo=echo)
    if returncode != 0:
        lines = "\n".join(tail) or "(no output)"
        raise SrlmError(
            f"{spec.kind} training of {spec.checkpoint_id} failed (exit {returncode}); last output:\n{lines}"
        )
    record = get_checkpoint(spec.layout, spec.checkpoint_id)
    if record is None:
        raise SrlmError(f"{spec.kind} training of {spec.checkpoint_id} exited 0 but registered no checkpoint")
    return record


def _command(kind: str, spec_path: Path, num_processes: int, force: bool, backend: str = "local") -> list[str]:
    arguments = [kind, "--spec", str(spec_path)] + (["--force"] if force else [])
    if backend == "ray":  # the driver starts section.num_processes Ray Train workers wherever the cluster has room
        return [sys.executable, "-m", "srlm.training.ray_train", *arguments]
    job = ["srlm.training.launch", *arguments]
    if num_processes == 1:
        return [sys.executable, "-m", *job]
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_processes", str(num_processes), "--num_machines", "1", "--dynamo_backend", "no",
        "-m", *job,
    ]  # fmt: skip


def _stream(command: list[str], *, echo: bool) -> tuple[int, list[str]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1, env=env
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                if echo:
                    print(line, flush=True)
        except BaseException:
            proc.kill()  # the caller was interrupted: don't leave a training process behind
            raise
        return proc.wait(), list(tail)


if __name__ == "__main__":
    sys.exit(main())
