"""Seed SFT (M_init → M0) with TRL's SFTTrainer: loss on completion tokens only, peak → final learning rate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from srlm.config import SFTConfig
from srlm.training.checkpoints import CheckpointHook, export_callback, train_and_save
from srlm.training.common import common_trainer_kwargs
from srlm.training.data import sft_dataset
from srlm.training.modeling import load_for_training, load_tokenizer, peft_config
from srlm.training.schedule import PeakToFinalLRMixin, check_schedule


def build_sft_trainer(
    model_path: str,
    train_uris: Sequence[str],
    output_dir: str | Path,
    cfg: SFTConfig,
    *,
    on_checkpoint: CheckpointHook | None = None,
    max_steps: int | None = None,
):
    """The configured TRL SFTTrainer and the config values to restore on save (used by train_sft and tests)."""
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    class SrlmSFTTrainer(PeakToFinalLRMixin, SFTTrainer):
        pass

    check_schedule(cfg.lr_schedule, cfg.learning_rate, cfg.final_learning_rate, "sft")
    dataset = sft_dataset(list(train_uris))
    tokenizer = load_tokenizer(model_path)
    model, restore_config = load_for_training(model_path, cfg.dropout)
    args = TRLSFTConfig(
        **common_trainer_kwargs(cfg, str(output_dir), "sft", max_steps),
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = SrlmSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora),
        callbacks=[export_callback(tokenizer, restore_config, cfg.save_steps, on_checkpoint)],
        final_learning_rate=cfg.final_learning_rate,
        lr_schedule=cfg.lr_schedule,
    )
    return trainer, restore_config


def train_sft(
    model_path: str,
    train_uris: Sequence[str],
    output_dir: str | Path,
    cfg: SFTConfig,
    *,
    on_checkpoint: CheckpointHook | None = None,
    max_steps: int | None = None,
) -> Path:
    """Fine-tune `model_path` on the sft_examples tables at `train_uris`; return the final checkpoint directory
    (<output_dir>/final). Intermediate checkpoints go to <output_dir>/steps/ and to `on_checkpoint`.
    `max_steps` caps optimizer steps (smoke runs, benchmarks); None trains cfg.num_train_epochs."""
    trainer, restore_config = build_sft_trainer(
        model_path, train_uris, output_dir, cfg, on_checkpoint=on_checkpoint, max_steps=max_steps
    )
    return train_and_save(trainer, restore_config, output_dir)

