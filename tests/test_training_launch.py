"""The training-job launcher: spec validation, a real child process that commits + registers, idempotent reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm.errors import ConfigError, SrlmError
from srlm.store import RunLayout, is_committed, write_directory
from srlm.training import launch
from srlm.training.launch import TrainingJobSpec, run_training_job
from srlm.training.registry import get_checkpoint, list_checkpoints
from tests.test_training_dpo import write_pairs
from tests.test_training_sft import write_sft_examples

SMALL_SFT = dict(batch_size=4, per_device_batch_size=2, max_length=96, save_steps=1, num_train_epochs=1)


def sft_spec(store: str, model: str, data: list[str], **overrides) -> TrainingJobSpec:
    values = dict(
        kind="sft",
        store_root=store,
        run="exp",
        model=model,
        data_uris=data,
        checkpoint_id="M0",
        iteration=0,
        config=dict(SMALL_SFT),
    )
    values.update(overrides)
    return TrainingJobSpec(**values)


def test_spec_json_roundtrip_and_validation(tmp_store):
    spec = sft_spec(tmp_store, "smollm2-135m", ["a", "b"], parent_id=None)
    assert TrainingJobSpec.from_json(spec.to_json()) == spec
    assert spec.output_uri == RunLayout(tmp_store, "exp").model("M0")
    assert spec.section().save_steps == 1 and spec.section().learning_rate == 5.5e-6  # paper default kept

    with pytest.raises(ConfigError, match="unknown key.*epochs"):
        TrainingJobSpec.from_json(json.dumps({**json.loads(spec.to_json()), "epochs": 1}), "spec.json")
    with pytest.raises(ConfigError, match="kind must be one of"):
        sft_spec(tmp_store, "m", ["a"], kind="ppo")
    with pytest.raises(ConfigError, match="exactly one pairs table"):
        sft_spec(tmp_store, "m", ["a", "b"], kind="dpo")
    with pytest.raises(ConfigError, match="sft: unknown key.*warmup"):
        sft_spec(tmp_store, "m", ["a"], config={"warmup": 3}).section()


def test_launcher_trains_commits_registers_and_rerun_is_a_noop(tiny_model_dir, tmp_store, monkeypatch):
    ift = write_sft_examples(f"{tmp_store}/seed/ift", n=8)
    spec = sft_spec(tmp_store, str(tiny_model_dir), [ift])

    record = run_training_job(spec, echo=False)
    assert record.checkpoint_id == "M0" and record.final and record.training == "sft" and record.step == 2
    assert record.config["save_steps"] == 1 and record.config["learning_rate"] == 5.5e-6  # the full section
    assert record.data_uri == ift and is_committed(record.uri)
    details = record.details  # how it was trained
    assert (details["backend"], details["world_size"], details["num_nodes"], details["sharding"]) == (
        "local", 1, 1, "ddp"
    )
    assert details["resumed_from_step"] is None and details["loss"]["first_step"] == 1 and details["loss"]["last_step"] == 2
    table = list_checkpoints(spec.layout)
    assert table.column("checkpoint_id").to_pylist() == ["M0-step1", "M0"]
    assert table.column("final").to_pylist() == [False, True]

    from transformers import AutoModelForCausalLM

    from srlm.models import resolve_model

    AutoModelForCausalLM.from_pretrained(resolve_model(record.uri))

    def no_process(*args, **kwargs):
        raise AssertionError("a finished job must not start a training process")

    monkeypatch.setattr(launch, "_stream", no_process)
    assert run_training_job(spec, echo=False) == record


def test_backend_picks_the_job_process():
    spec_path = Path("spec.json")
    assert launch._command("sft", spec_path, 1, False)[1:3] == ["-m", "srlm.training.launch"]
    assert "accelerate.commands.launch" in launch._command("sft", spec_path, 2, False)
    ray = launch._command("dpo", spec_path, 2, True, backend="ray")  # Ray Train places the 2 workers itself
    assert ray[1:] == ["-m", "srlm.training.ray_train", "dpo", "--spec", "spec.json", "--force"]


def test_launcher_failure_raises_with_the_jobs_last_lines(tiny_model_dir, tmp_store):
    spec = sft_spec(tmp_store, str(tiny_model_dir), [f"{tmp_store}/seed/missing"])
    with pytest.raises(SrlmError, match=r"(?s)sft training of M0 failed \(exit 1\).*seed/missing"):
        run_training_job(spec, echo=False)
    assert get_checkpoint(spec.layout, "M0") is None


def test_job_process_registers_a_committed_but_unregistered_checkpoint(tiny_model_dir, tmp_store, tmp_path, capsys):
    """A job killed between committing the model and registering it finishes on rerun without training."""
    spec = sft_spec(tmp_store, str(tiny_model_dir), [f"{tmp_store}/never-read"])
    write_directory(spec.output_uri, tiny_model_dir)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.to_json())

    assert launch.main(["sft", "--spec", str(spec_path)]) == 0
    record = get_checkpoint(spec.layout, "M0")
    assert record is not None and record.final and record.step is None
    assert "M0 registered" in capsys.readouterr().out
    assert launch.main(["dpo", "--spec", str(spec_path)]) == 1
    assert "spec is for 'sft'" in capsys.readouterr().err


def test_dpo_job_on_s3_from_a_registered_checkpoint(tiny_model_dir, s3_store):
    """The child process reaches S3 (settings inherited from the environment), fetches M0, trains M1 on it."""
    from srlm.training.registry import register_checkpoint

    layout = RunLayout(s3_store, "exp")
    write_directory(layout.model("M0"), tiny_model_dir)
    register_checkpoint(layout, "M0", 0, layout.model("M0"), None, "sft", None, True, None, None)
    pairs = write_pairs(layout.pairs(1), n=4)
    spec = TrainingJobSpec(
        kind="dpo",
        store_root=s3_store,
        run="exp",
        model=layout.model("M0"),
        data_uris=[pairs],
        checkpoint_id="M1",
        iteration=1,
        parent_id="M0",
        config=dict(batch_size=4, per_device_batch_size=4, max_length=96),
    )
    record = run_training_job(spec, echo=False)
    assert (record.checkpoint_id, record.parent_id, record.training, record.step) == ("M1", "M0", "dpo", 1)
    assert record.config["beta"] == 0.1 and is_committed(layout.model("M1"))


def test_a_save_made_again_by_a_restarted_attempt_keeps_the_first(tiny_model_dir, tmp_store, tmp_path):
    """A Ray Train worker group restarted from an earlier checkpoint saves step 4 again from another work dir: the
    first commit stands (registered once), rather than reading as another producer's and failing the job."""
    from dataclasses import replace

    spec = sft_spec(tmp_store, str(tiny_model_dir), [f"{tmp_store}/never-read"], work_dir=str(tmp_path / "try1"))
    launch._commit_and_register(spec, tiny_model_dir, step=4, final=False, checkpoint_id="M0-step4", force=False)
    first = get_checkpoint(spec.layout, "M0-step4")
    retry = replace(spec, work_dir=str(tmp_path / "try2"))
    launch._commit_and_register(retry, tiny_model_dir, step=4, final=False, checkpoint_id="M0-step4", force=False)
    assert get_checkpoint(spec.layout, "M0-step4") == first
