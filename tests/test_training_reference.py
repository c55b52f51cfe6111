"""Reference log-probs precomputed in their own pass: the same loss as a reference model in the step, no reference
model held during training, stored with the pairs and reused by a retry."""

from __future__ import annotations

import gc
import weakref

import pytest

from srlm.config import DPOTrainingConfig
from tests.test_training_dpo import write_pairs


def first_step_loss(trainer) -> float:
    from transformers import set_seed

    set_seed(trainer.args.seed)  # the same dropout masks in the policy forward of both runs
    trainer.train()
    return next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)


def cfg(**overrides) -> DPOTrainingConfig:
    # dropout stays at the paper's 0.1: the policy forward uses it, the reference (pass or model) must not
    return DPOTrainingConfig(**{"batch_size": 4, "per_device_batch_size": 2, "max_length": 128, **overrides})


@pytest.mark.parametrize("explicit_reference", [False, True], ids=["reference=policy", "reference=other-model"])
def test_precomputed_reference_gives_the_reference_model_loss_and_holds_no_model(
    explicit_reference, tiny_model_dir, tmp_store, tmp_path, monkeypatch
):
    import srlm.training.dpo as dpo
    from srlm.models.tiny import build_tiny_model

    pairs = write_pairs(f"{tmp_store}/pairs", n=8)
    ref_path = str(build_tiny_model(tmp_path / "ref", seed=1)) if explicit_reference else None
    loaded = []
    load_reference = dpo.load_reference
    monkeypatch.setattr(dpo, "load_reference", lambda path: loaded.append(load_reference(path)) or loaded[-1])

    baseline, _ = dpo.build_dpo_trainer(
        str(tiny_model_dir),
        pairs,
        tmp_path / "a",
        cfg(precompute_ref_log_probs=False),
        ref_model_path=ref_path,
        max_steps=1,
    )
    assert baseline.ref_model is not None and "ref_chosen_logps" not in baseline.train_dataset.column_names
    expected = first_step_loss(baseline)
    del baseline
    loaded.clear()

    trainer, _ = dpo.build_dpo_trainer(
        str(tiny_model_dir), pairs, tmp_path / "b", cfg(), ref_model_path=ref_path, max_steps=1
    )
    assert trainer.ref_model is None and trainer.precompute_ref_logps
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    # A separate reference model was loaded only when one was named, and none is alive once training starts.
    assert len(loaded) == (1 if explicit_reference else 0)
    alive = [weakref.ref(model) for model in loaded]
    loaded.clear()
    gc.collect()
    assert all(ref() is None for ref in alive)
    assert trainer.accelerator._models == [] or all(m is trainer.model for m in trainer.accelerator._models)

    assert first_step_loss(trainer) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_a_retry_reuses_the_stored_reference_log_probs(tiny_model_dir, tmp_store, tmp_path, monkeypatch):
    from trl import DPOTrainer

    from srlm.store import RunLayout, read_manifest, read_table
    from srlm.training.dpo import build_dpo_trainer

    pairs = write_pairs(f"{tmp_store}/pairs", n=6)
    batches = []  # reference forwards: one per batch of the pass
    original = DPOTrainer.compute_ref_log_probs

    def counting(self, model, inputs):
        batches.append(len(inputs["input_ids"]))
        return original(self, model, inputs)

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counting)
    first, _ = build_dpo_trainer(str(tiny_model_dir), pairs, tmp_path / "a", cfg())
    assert sum(batches) == 2 * 6  # chosen + rejected of every pair, once
    passes = len(batches)
    stored_uri = RunLayout.reference_log_probs(pairs)
    table = read_table(stored_uri, "reference_log_probs").to_pydict()
    assert table["pair_index"] == list(range(6)) and table["prompt_id"] == [f"p{i}" for i in range(6)]
    assert table["ref_chosen_logps"] == pytest.approx(first.train_dataset["ref_chosen_logps"])
    producer = read_manifest(stored_uri).producer
    assert producer["inputs"]["pairs"]["sha256"] == read_manifest(pairs).sha256
    assert producer["settings"]["max_length"] == 128

    retry, _ = build_dpo_trainer(str(tiny_model_dir), pairs, tmp_path / "b", cfg())
    assert len(batches) == passes  # read from the store, not computed again
    assert retry.train_dataset["ref_rejected_logps"] == first.train_dataset["ref_rejected_logps"]
    assert retry.ref_model is None

    build_dpo_trainer(str(tiny_model_dir), pairs, tmp_path / "c", cfg(max_length=64))
    assert len(batches) == 2 * passes  # another tokenization: computed again
