"""Seed SFT on the tiny model: completion-only labels, learning, LR endpoints, dropout, checkpoints, LoRA merge."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest

from srlm.config import LoraAdapterConfig, SFTTrainingConfig
from srlm.errors import ConfigError, DataError, StoreError
from srlm.training.common import batch_arithmetic
from srlm.training.schedule import check_schedule, lr_factor


def write_sft_examples(uri: str, n: int = 8, kind: str = "ift") -> str:
    from srlm.store import write_table

    rows = [
        {
            "example_id": f"{kind}-{i}",
            "kind": kind,
            "prompt_messages": [{"role": "user", "content": f"What is {i} plus {i}?"}],
            "completion": f"{i} plus {i} is {2 * i}.",
            "source": "test",
            "score": None,
        }
        for i in range(n)
    ]
    write_table(uri, pa.Table.from_pylist(rows), "sft_examples")
    return uri


def small_cfg(**overrides) -> SFTTrainingConfig:
    values = dict(
        learning_rate=1e-3,
        final_learning_rate=1e-4,
        batch_size=4,
        per_device_batch_size=2,
        num_train_epochs=3,
        max_length=128,
        save_steps=2,
    )
    values.update(overrides)
    return SFTTrainingConfig(**values)


def test_sft_labels_mask_prompt_tokens_and_dropout_is_set(tiny_model_dir, tmp_store, tmp_path):
    from transformers import AutoTokenizer

    from srlm.training.sft import build_sft_trainer

    ift = write_sft_examples(f"{tmp_store}/ift", n=2)
    eft = write_sft_examples(f"{tmp_store}/eft", n=2, kind="eft")
    trainer, restore = build_sft_trainer(str(tiny_model_dir), [ift, eft], tmp_path / "out", small_cfg(dropout=0.1))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(trainer.train_dataset) == 4  # IFT and EFT together

    example = trainer.train_dataset[1]
    ids, labels = example["input_ids"], example["labels"]
    prompt_len = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:prompt_len])
    assert labels[prompt_len:] == ids[prompt_len:]
    prompt_text = tokenizer.decode(ids[:prompt_len])
    assert prompt_text.endswith("<|im_start|>user\nWhat is 1 plus 1?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(labels[prompt_len:]).startswith("1 plus 1 is 2.<|im_end|>")  # EOS is learned

    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert ((batch["labels"] == -100) | (batch["attention_mask"] == 1)).all()  # padding never has a label

    # Llama exposes dropout as attention dropout: on while training, restored in what gets saved.
    assert trainer.model.model.layers[0].self_attn.attention_dropout == 0.1
    assert restore == {"attention_dropout": 0.0}
    assert trainer.args.gradient_accumulation_steps == 2 and trainer.args.per_device_train_batch_size == 2


@pytest.mark.parametrize("mixed_precision", ["auto", "bf16", "no"])
def test_mixed_precision_setting_reaches_the_trainer(tmp_path, mixed_precision):
    import torch

    from srlm.generation.device import bf16_supported
    from srlm.training.common import common_trainer_kwargs

    kwargs = common_trainer_kwargs(small_cfg(mixed_precision=mixed_precision), str(tmp_path), "sft", None)
    expected = {"auto": bf16_supported(), "bf16": True, "no": False}[mixed_precision]
    assert kwargs["bf16"] is expected and kwargs["fp16"] is False
    # On a machine without an accelerator, Trainer only accepts bf16 when told that CPU training is meant.
    assert kwargs["use_cpu"] is (expected and not torch.accelerator.is_available())


def test_unknown_mixed_precision_is_a_config_error(tmp_path):
    from srlm.errors import ConfigError
    from srlm.training.common import common_trainer_kwargs

    cfg = small_cfg()
    cfg.mixed_precision = "fp8"  # the config refuses it when built (tests/test_config.py); the trainer checks again
    with pytest.raises(ConfigError, match=r"dpo\.mixed_precision: expected one of auto, bf16, no, got 'fp8'"):
        common_trainer_kwargs(cfg, str(tmp_path), "dpo", None)


def test_sft_learns_with_peak_to_final_lr_and_saves_checkpoints(tiny_model_dir, tmp_store, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from srlm.training.sft import train_sft

    uri = write_sft_examples(f"{tmp_store}/ift", n=8)
    saved = []
    final = train_sft(
        str(tiny_model_dir), [uri], tmp_path / "out", small_cfg(), on_checkpoint=lambda s, p: saved.append((s, p))
    )

    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert log["global_step"] == 6  # 8 examples × 3 epochs / global batch 4
    steps = [entry for entry in log["log"] if "loss" in entry]
    assert len(steps) == 6
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.3  # the repeated data is being learned
    rates = [entry["learning_rate"] for entry in steps]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[3] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 5)))  # cosine

    assert [step for step, _ in saved] == [2, 4]  # the last step is the final checkpoint, not an intermediate
    for _, directory in saved:
        assert AutoConfig.from_pretrained(directory).attention_dropout == 0.0
    AutoModelForCausalLM.from_pretrained(final)
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(final / "model.safetensors")
    assert before.keys() == after.keys()
    assert not (before["model.layers.0.mlp.up_proj.weight"] == after["model.layers.0.mlp.up_proj.weight"]).all()
    assert (final / "chat_template.jinja").exists() or "chat_template" in (final / "tokenizer_config.json").read_text()


def test_sft_lora_checkpoint_is_merged(tiny_model_dir, tmp_store, tmp_path):
    from safetensors.torch import load_file

    from srlm.training.sft import train_sft

    uri = write_sft_examples(f"{tmp_store}/ift", n=4)
    cfg = small_cfg(num_train_epochs=1, lora=LoraAdapterConfig(enabled=True, r=4, alpha=8))
    final = train_sft(str(tiny_model_dir), [uri], tmp_path / "out", cfg)
    assert not (final / "adapter_config.json").exists()
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(final / "model.safetensors")
    assert before.keys() == after.keys()  # plain weights, no lora_A/lora_B
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not (before[name] == after[name]).all()  # the adapters were merged in
    assert (before["model.embed_tokens.weight"] == after["model.embed_tokens.weight"]).all()  # not adapted


def test_lr_factor_endpoints_and_shapes():
    for shape in ("cosine", "linear"):
        assert lr_factor(0, total_steps=10, final_ratio=0.1, shape=shape) == 1.0
        assert lr_factor(9, total_steps=10, final_ratio=0.1, shape=shape) == pytest.approx(0.1)
        assert lr_factor(0, total_steps=1, final_ratio=0.1, shape=shape) == 1.0
    assert lr_factor(5, total_steps=11, final_ratio=0.0, shape="linear") == pytest.approx(0.5)
    assert lr_factor(5, total_steps=11, final_ratio=0.0, shape="cosine") == pytest.approx(0.5)
    early = dict(step=2, total_steps=11, final_ratio=0.0)
    assert lr_factor(**early, shape="cosine") > lr_factor(**early, shape="linear")  # cosine decays slower at first


def test_schedule_and_batch_validation():
    with pytest.raises(ConfigError, match="sft.lr_schedule"):
        check_schedule("step", 1e-5, 1e-6, "sft")
    with pytest.raises(ConfigError, match="dpo.final_learning_rate"):
        check_schedule("linear", 1e-6, 1e-5, "dpo")
    assert batch_arithmetic(16, 4, 1, "sft") == (4, 4)
    assert batch_arithmetic(16, 4, 2, "sft") == (4, 2)
    assert batch_arithmetic(2, 4, 1, "sft") == (2, 1)
    with pytest.raises(ConfigError, match="sft.batch_size 16 is not a multiple"):
        batch_arithmetic(16, 3, 1, "sft")


def test_sft_dataset_errors(tmp_store):
    from srlm.store import write_table
    from srlm.store.schemas import schema
    from srlm.training.data import sft_dataset

    empty = f"{tmp_store}/empty"
    write_table(empty, schema("sft_examples").empty_table(), "sft_examples")
    with pytest.raises(DataError, match="no SFT examples"):
        sft_dataset([empty])
    prompts = f"{tmp_store}/prompts"
    write_table(prompts, pa.table({"prompt_id": ["p"], "prompt": ["x"], "source": ["seed"]}), "prompts")
    with pytest.raises(StoreError, match="expected 'sft_examples'"):
        sft_dataset([prompts])
    with pytest.raises(DataError):
        sft_dataset([])


# ------------------------------------------------------------------------------------------------ sharding and dtype


def test_auto_sharding_is_fsdp_only_on_more_than_one_gpu():
    from srlm.config import effective_sharding

    assert effective_sharding("auto", gpus=True, world_size=16) == "fsdp"
    assert effective_sharding("auto", gpus=True, world_size=1) == "ddp"  # one process has nothing to shard across
    assert effective_sharding("auto", gpus=False, world_size=2) == "ddp"  # CPU: DDP over gloo
    assert effective_sharding("fsdp", gpus=False, world_size=2) == "fsdp"  # explicit: refused at trainer build


def test_fsdp_arguments_wrap_the_decoder_layer_with_fp32_shards_and_fsdp_checkpointing(
    tiny_model_dir, tmp_path, monkeypatch
):
    """On GPUs (simulated: the arguments are built, not run; this CPU cannot run FSDP), fsdp becomes FSDP2 full
    sharding with the architecture's decoder layer as the unit, activation checkpointing through FSDP instead of
    the Trainer's, per-rank resumable shards, and the master weights left in the dtype they were loaded in."""
    import torch

    from srlm.training.common import common_trainer_kwargs
    from srlm.training.modeling import load_for_training

    model, _ = load_for_training(str(tiny_model_dir), 0.0)
    assert next(model.parameters()).dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = small_cfg(sharding="auto", gradient_checkpointing=True, fsdp_offload=True, mixed_precision="bf16")
    kwargs = common_trainer_kwargs(cfg, str(tmp_path), "sft", None, model=model)
    assert kwargs["fsdp"] is True and kwargs["gradient_checkpointing"] is False
    fsdp = kwargs["fsdp_config"]
    assert fsdp["version"] == 2 and fsdp["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert fsdp["activation_checkpointing"] is True and fsdp["cpu_offload"] is True
    assert fsdp["state_dict_type"] == "SHARDED_STATE_DICT"
    # world size 1: nothing to shard, plain arguments
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert "fsdp" not in common_trainer_kwargs(small_cfg(mixed_precision="no"), str(tmp_path), "sft", None, model=model)


def test_fsdp_without_gpus_is_one_clear_error(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from srlm.training.common import common_trainer_kwargs
    from srlm.training.modeling import load_for_training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, _ = load_for_training(str(tiny_model_dir), 0.0)
    with pytest.raises(ConfigError, match=r"sft\.sharding: fsdp needs GPUs"):
        common_trainer_kwargs(small_cfg(sharding="fsdp", mixed_precision="no"), str(tmp_path), "sft", None, model=model)


def test_fsdp_with_lora_and_offload_with_ddp_are_refused_by_the_config():
    from srlm.config import config_from_dict, effective_sharding

    with pytest.raises(ConfigError, match=r"sft\.sharding: fsdp with lora\.enabled is not supported"):
        config_from_dict({"sft": {"sharding": "fsdp", "lora": {"enabled": True}}}, "test")
    with pytest.raises(ConfigError, match=r"dpo\.fsdp_offload: needs sharding fsdp or auto"):
        config_from_dict({"dpo": {"sharding": "ddp", "fsdp_offload": True}}, "test")
    assert effective_sharding("auto", gpus=True, world_size=8, lora=True) == "ddp"  # auto never picks the refusal


def test_bf16_master_weights_load_the_model_in_bf16(tiny_model_dir):
    import torch

    from srlm.training.modeling import load_for_training

    model, _ = load_for_training(str(tiny_model_dir), 0.0, "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_unsharded_training_saves_the_models_own_weights(tiny_model_dir):
    """gathered_state_dict is a collective only under FSDP; elsewhere save_checkpoint saves the model itself."""
    from accelerate import Accelerator

    from srlm.training.modeling import gathered_state_dict

    assert gathered_state_dict(Accelerator(cpu=True), object()) is None


def test_resumable_saves_keep_the_trainers_own_latest_state(tiny_model_dir, tmp_store, tmp_path):
    """With resumable saves (the Ray engine asks for them) the Trainer writes checkpoint-N with optimizer and
    scheduler state every save_steps, keeping only the latest; resuming from one continues at step N."""
    from srlm.training.common import TrainerRuntime
    from srlm.training.sft import train_sft

    uri = write_sft_examples(f"{tmp_store}/ift", n=8)
    out = tmp_path / "out"
    train_sft(str(tiny_model_dir), [uri], out, small_cfg(num_train_epochs=1, save_steps=1), max_steps=2,
              runtime=TrainerRuntime(resumable_saves=True))
    saves = sorted(p.name for p in out.glob("checkpoint-*"))
    assert saves == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "optimizer.pt").is_file() and (out / "checkpoint-2" / "scheduler.pt").is_file()
    from transformers import TrainerCallback

    class StepsRun(TrainerCallback):
        steps: list[int] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    resumed = tmp_path / "resumed"
    train_sft(str(tiny_model_dir), [uri], resumed, small_cfg(num_train_epochs=1, save_steps=1), max_steps=3,
              runtime=TrainerRuntime(resume_from=str(out / "checkpoint-2"), callbacks=[StepsRun()]))
    assert StepsRun.steps == [3]  # steps 1–2 were not redone
    assert json.loads((resumed / "training_log.json").read_text())["global_step"] == 3
