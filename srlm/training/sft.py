"""Seed SFT (M_init → M0) with TRL's SFTTrainer: loss on completion tokens only, peak → final learning rate."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srlm.config import SFTTrainingConfig
from srlm.training.checkpoints import CheckpointHook, train_and_save
from srlm.training.common import TrainerRuntime, common_trainer_kwargs, load_for_trainer, make_trainer
from srlm.training.data import fitted_sft_dataset
from srlm.training.modeling import peft_config


def build_sft_trainer(
    model_path: str,
    train_uris: Sequence[str],
    output_dir: str | Path,
    cfg: SFTTrainingConfig,
    *,
    on_checkpoint: CheckpointHook | None = None,
    max_steps: int | None = None,
    runtime: TrainerRuntime | None = None,
):
    """The configured TRL SFTTrainer and the config values to restore on save (used by train_sft and tests)."""
    from trl import SFTConfig as TRLSFTConfig, SFTTrainer

    tokenizer, model, restore_config = load_for_trainer(model_path, cfg, "sft", runtime)
    # Examples longer than max_length are dropped, not truncated (srlm.training.data); the counts go with the job's
    # output to the registry record and the sft step's summary.
    dataset, fit = fitted_sft_dataset(list(train_uris), tokenizer, cfg.max_length)
    if int(os.environ.get("RANK", "0")) == 0:
        fit.write(output_dir)
    args = TRLSFTConfig(
        **common_trainer_kwargs(cfg, str(output_dir), "sft", max_steps, runtime, model),
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = make_trainer(
        SFTTrainer,
        cfg,
        tokenizer=tokenizer,
        restore_config=restore_config,
        on_checkpoint=on_checkpoint,
        runtime=runtime,
        model=model,
        args=args,
        train_dataset=dataset,
        peft_config=peft_config(cfg.lora),
    )
    return trainer, restore_config


def train_sft(
    model_path: str, train_uris: Sequence[str], output_dir: str | Path, cfg: SFTTrainingConfig, **options: Any
) -> Path:
    """Fine-tune `model_path` on the sft_examples tables at `train_uris`; return the final checkpoint directory
    (<output_dir>/final). `options` are build_sft_trainer's: on_checkpoint (intermediate checkpoints also go to
    <output_dir>/steps/), runtime (srlm.training.common.TrainerRuntime), max_steps (caps optimizer steps, for smoke runs and benchmarks; None trains
    cfg.num_train_epochs)."""
    trainer, restore_config = build_sft_trainer(model_path, train_uris, output_dir, cfg, **options)
    runtime = options.get("runtime")
    return train_and_save(trainer, restore_config, output_dir, runtime.resume_from if runtime else None)
