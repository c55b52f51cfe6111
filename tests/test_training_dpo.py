"""DPO on the tiny model: weights move, the reference stays the starting model, LR endpoints, LoRA merge."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch

from srlm.config import DPOTrainingConfig, LoraAdapterConfig
from srlm.errors import DataError


def write_pairs(uri: str, n: int = 8) -> str:
    from srlm.store import write_table

    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": f"Write one sentence about the number {i}.",
            "chosen": f"The number {i} is a number many people like.",
            "rejected": f"{i}.",
            "chosen_candidate_id": f"p{i}-c0",
            "rejected_candidate_id": f"p{i}-c1",
            "chosen_score": 5.0,
            "rejected_score": 2.0,
            "margin": 3.0,
        }
        for i in range(n)
    ]
    write_table(uri, pa.Table.from_pylist(rows), "pairs")
    return uri


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_dpo_two_steps_move_policy_not_reference(tiny_model_dir, tmp_store, tmp_path):
    from safetensors.torch import load_file

    from srlm.training.checkpoints import train_and_save
    from srlm.training.dpo import build_dpo_trainer

    pairs = write_pairs(f"{tmp_store}/pairs", n=8)
    # paper: β 0.1, 1e-6 → 1e-7, dropout 0.1; the reference model in the step (not precomputed)
    cfg = DPOTrainingConfig(batch_size=4, per_device_batch_size=2, max_length=128, precompute_ref_log_probs=False)
    trainer, _ = build_dpo_trainer(str(tiny_model_dir), pairs, tmp_path / "out", cfg)
    start = load_file(tiny_model_dir / "model.safetensors")
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert not trainer.ref_model.training
    assert trainer.ref_model.model.layers[0].self_attn.attention_dropout == 0.0
    assert trainer.model.model.layers[0].self_attn.attention_dropout == 0.1  # dropout stays on in the policy
    assert trainer.beta == 0.1

    final = train_and_save(trainer, {"attention_dropout": 0.0}, tmp_path / "out")

    ref_after = state(trainer.ref_model)
    assert all(torch.equal(ref_after[k], start[k]) for k in start)  # reference = the model at the start
    after = load_file(final / "model.safetensors")
    changed = [k for k in start if not torch.equal(start[k], after[k])]
    assert "model.layers.1.self_attn.o_proj.weight" in changed

    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    steps = [entry for entry in log["log"] if "loss" in entry]
    assert log["global_step"] == 2 and len(steps) == 2
    assert steps[0]["learning_rate"] == pytest.approx(1e-6) and steps[-1]["learning_rate"] == pytest.approx(1e-7)


def test_dpo_explicit_reference_model(tiny_model_dir, tmp_store, tmp_path):
    from safetensors.torch import load_file

    from srlm.models.tiny import build_tiny_model
    from srlm.training.dpo import build_dpo_trainer

    other = build_tiny_model(tmp_path / "ref", seed=1)
    pairs = write_pairs(f"{tmp_store}/pairs", n=4)
    cfg = DPOTrainingConfig(batch_size=4, max_length=128, precompute_ref_log_probs=False)
    trainer, _ = build_dpo_trainer(str(tiny_model_dir), pairs, tmp_path / "out", cfg, ref_model_path=str(other))
    expected = load_file(other / "model.safetensors")
    ref = state(trainer.ref_model)
    assert all(torch.equal(ref[k], expected[k]) for k in expected)


def test_dpo_lora_merges_and_precomputes_reference(tiny_model_dir, tmp_store, tmp_path):
    from safetensors.torch import load_file

    from srlm.training.checkpoints import train_and_save
    from srlm.training.dpo import build_dpo_trainer

    pairs = write_pairs(f"{tmp_store}/pairs", n=4)
    lora = LoraAdapterConfig(enabled=True, r=4, alpha=8)
    cfg = DPOTrainingConfig(batch_size=4, max_length=128, learning_rate=1e-4, final_learning_rate=1e-5, lora=lora)
    trainer, restore = build_dpo_trainer(str(tiny_model_dir), pairs, tmp_path / "out", cfg)
    # The reference is the base with adapters disabled, its log-probs computed up front without dropout.
    assert trainer.ref_model is None and trainer.precompute_ref_logps
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    final = train_and_save(trainer, restore, tmp_path / "out")
    assert not (final / "adapter_config.json").exists()
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(final / "model.safetensors")
    assert before.keys() == after.keys()
    name = "model.layers.0.self_attn.v_proj.weight"
    assert not torch.equal(before[name], after[name])


def test_dpo_refuses_an_empty_pairs_table(tmp_store):
    from srlm.store import write_table
    from srlm.store.schemas import schema
    from srlm.training.data import dpo_dataset

    uri = f"{tmp_store}/pairs"
    write_table(uri, schema("pairs").empty_table(), "pairs")
    with pytest.raises(DataError, match="pairs table is empty"):
        dpo_dataset(uri)
