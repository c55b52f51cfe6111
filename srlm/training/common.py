"""Trainer arguments SFT and DPO share: batch arithmetic, precision, checkpointing and logging."""

from __future__ import annotations

import os
from typing import Any

from srlm.errors import ConfigError


def world_size() -> int:
    """Processes in this training job (accelerate launch / torchrun set WORLD_SIZE; a plain process is 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_arithmetic(batch_size: int, per_device_batch_size: int, processes: int, section: str) -> tuple[int, int]:
    """(per-device micro-batch, gradient-accumulation steps) whose product with `processes` is `batch_size`."""
    if batch_size < 1 or per_device_batch_size < 1:
        raise ConfigError(f"{section}.batch_size and {section}.per_device_batch_size must be positive")
    per_device = min(per_device_batch_size, max(1, batch_size // processes))
    if batch_size % (per_device * processes):
        raise ConfigError(
            f"{section}.batch_size {batch_size} is not a multiple of {section}.per_device_batch_size {per_device} "
            f"× {processes} process(es); change one so the global batch is exact"
        )
    return per_device, batch_size // (per_device * processes)


def use_bf16() -> bool:
    """bf16 autocast on GPUs that support it (weights and optimizer state stay fp32: DPO's 1e-7 updates are below
    bf16's resolution); plain fp32 on CPU and older GPUs."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def common_trainer_kwargs(cfg: Any, output_dir: str, section: str, max_steps: int | None) -> dict[str, Any]:
    """TrainingArguments fields derived from an srlm SFTConfig/DPOConfig section."""
    per_device, accumulation = batch_arithmetic(cfg.batch_size, cfg.per_device_batch_size, world_size(), section)
    if cfg.save_steps < 1:
        raise ConfigError(f"{section}.save_steps: must be at least 1, got {cfg.save_steps}")
    if cfg.max_length < 8:
        raise ConfigError(f"{section}.max_length: must be at least 8 tokens, got {cfg.max_length}")
    import torch

    bf16 = use_bf16()
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
