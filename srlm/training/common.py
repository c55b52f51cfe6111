"""Trainer arguments SFT and DPO share: batch arithmetic, precision, checkpointing and logging."""

from __future__ import annotations

import os
import typing
from typing import Any

from srlm.config import MixedPrecision, micro_batch
from srlm.errors import ConfigError
from srlm.training.checkpoints import CheckpointHook, export_callback
from srlm.training.modeling import load_for_training, load_tokenizer
from srlm.training.schedule import PeakToFinalLRMixin, check_schedule


def world_size() -> int:
    """Processes in this training job (accelerate launch / torchrun set WORLD_SIZE; a plain process is 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_arithmetic(batch_size: int, per_device_batch_size: int, processes: int, section: str) -> tuple[int, int]:
    """(per-device micro-batch, gradient-accumulation steps) whose product with `processes` is `batch_size`."""
    if batch_size < 1 or per_device_batch_size < 1:
        raise ConfigError(f"{section}.batch_size and {section}.per_device_batch_size must be positive")
    per_device = micro_batch(batch_size, per_device_batch_size, processes)
    if batch_size % (per_device * processes):
        raise ConfigError(
            f"{section}.batch_size {batch_size} is not a multiple of {section}.per_device_batch_size {per_device} "
            f"× {processes} process(es); change one so the global batch is exact"
        )
    return per_device, batch_size // (per_device * processes)


MIXED_PRECISION = typing.get_args(MixedPrecision)  # the choices live on the config field


def use_bf16(mixed_precision: str, section: str) -> bool:
    """Whether to train under bf16 autocast. Only the matmuls run in bf16: weights and optimizer state stay fp32,
    because DPO's 1e-7 updates are below bf16's resolution. `auto` uses it where the hardware computes in bf16
    (elsewhere it is emulated and slower than fp32); on a 2-core AVX-512 BF16 CPU it makes SFT steps ~1.3x faster."""
    if mixed_precision not in MIXED_PRECISION:
        raise ConfigError(
            f"{section}.mixed_precision: expected one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}"
        )
    if mixed_precision == "auto":
        from srlm.generation.device import bf16_supported

        return bf16_supported()
    return mixed_precision == "bf16"


def common_trainer_kwargs(cfg: Any, output_dir: str, section: str, max_steps: int | None) -> dict[str, Any]:
    """TrainingArguments fields derived from an srlm SFTTrainingConfig/DPOTrainingConfig section."""
    per_device, accumulation = batch_arithmetic(cfg.batch_size, cfg.per_device_batch_size, world_size(), section)
    import torch

    bf16 = use_bf16(cfg.mixed_precision, section)
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=cfg.learning_rate,
        warmup_steps=0,
        weight_decay=0.0,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bf16,
        fp16=False,
        # Trainer refuses bf16 without an accelerator unless told that CPU training is meant.
        use_cpu=bf16 and not torch.accelerator.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length,
        # srlm.training.checkpoints exports intermediate checkpoints itself (full models, LoRA merged); they are for
        # evaluation and early stopping (the paper picks DPO checkpoints on held-out data), not for resuming.
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        logging_first_step=True,
        disable_tqdm=True,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=True,
        push_to_hub=False,
    )


def load_for_trainer(model_path: str, cfg: Any, section: str) -> tuple[Any, Any, dict[str, Any]]:
    """(tokenizer, model, restore_config) for training `model_path` under an sft/dpo section, after checking its
    learning-rate schedule (a bad schedule fails before the model is loaded)."""
    check_schedule(cfg.lr_schedule, cfg.learning_rate, cfg.final_learning_rate, section)
    tokenizer = load_tokenizer(model_path)
    model, restore_config = load_for_training(model_path, cfg.dropout)
    return tokenizer, model, restore_config


def make_trainer(
    trl_trainer: type,
    cfg: Any,
    *,
    tokenizer: Any,
    restore_config: dict[str, Any],
    on_checkpoint: CheckpointHook | None,
    **trainer_kwargs: Any,
) -> Any:
    """A TRL trainer of class `trl_trainer` with srlm's peak-to-final learning-rate schedule and its intermediate
    checkpoint export (every cfg.save_steps steps, handed to `on_checkpoint`); `trainer_kwargs` are the rest
    (model, args, datasets, peft_config, …)."""
    trainer_class = type(f"Srlm{trl_trainer.__name__}", (PeakToFinalLRMixin, trl_trainer), {})
    return trainer_class(
        processing_class=tokenizer,
        callbacks=[export_callback(tokenizer, restore_config, cfg.save_steps, on_checkpoint)],
        final_learning_rate=cfg.final_learning_rate,
        lr_schedule=cfg.lr_schedule,
        **trainer_kwargs,
    )
