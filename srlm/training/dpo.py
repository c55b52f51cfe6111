"""One self-rewarding DPO iteration (M_{t-1} → M_t) with TRL's DPOTrainer.

The reference model is the model at the start of the iteration (the paper's choice): `model_path` itself unless
`ref_model_path` names another. Dropout (paper: 0.1) applies to the policy only; TRL would otherwise switch it off
in both models, and the reference always runs without it. With LoRA the reference is the base model with the
adapters disabled, i.e. again the starting model; its log-probs are then precomputed up front (in eval mode) when
dropout is on, because computing them on the fly would run the shared base in training mode, with dropout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from srlm.config import DPOTrainingConfig
from srlm.training.checkpoints import CheckpointHook, train_and_save
from srlm.training.common import common_trainer_kwargs, load_for_trainer, make_trainer
from srlm.training.data import dpo_dataset
from srlm.training.modeling import load_reference, peft_config

log = logging.getLogger(__name__)


def build_dpo_trainer(
    model_path: str,
    pairs_uri: str,
    output_dir: str | Path,
    cfg: DPOTrainingConfig,
    *,
    ref_model_path: str | None = None,
    on_checkpoint: CheckpointHook | None = None,
    max_steps: int | None = None,
):
    """The configured TRL DPOTrainer and the config values to restore on save (used by train_dpo and tests)."""
    from trl import DPOConfig as TRLDPOConfig, DPOTrainer

    dataset = dpo_dataset(pairs_uri)
    tokenizer, model, restore_config = load_for_trainer(model_path, cfg, "dpo")
    lora = peft_config(cfg.lora)
    precompute = cfg.precompute_ref_log_probs
    if lora is not None and cfg.dropout > 0 and not precompute:
        log.info("LoRA with dropout: precomputing reference log-probs so the reference runs without dropout")
        precompute = True
    # With LoRA and no separate reference, TRL disables the adapters to get the starting model.
    ref_model = None if lora is not None and ref_model_path is None else load_reference(ref_model_path or model_path)
    args = TRLDPOConfig(
        **common_trainer_kwargs(cfg, str(output_dir), "dpo", max_steps),
        beta=cfg.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=precompute,
        disable_dropout=cfg.dropout == 0,
        dataset_num_proc=None,
    )
    trainer = make_trainer(
        DPOTrainer,
        cfg,
        tokenizer=tokenizer,
        restore_config=restore_config,
        on_checkpoint=on_checkpoint,
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        peft_config=lora,
    )
    return trainer, restore_config


def train_dpo(model_path: str, pairs_uri: str, output_dir: str | Path, cfg: DPOTrainingConfig, **options: Any) -> Path:
    """DPO-train `model_path` on the pairs table at `pairs_uri`; return the final checkpoint directory
    (<output_dir>/final, LoRA merged). `options` are build_dpo_trainer's: ref_model_path, on_checkpoint
    (intermediate checkpoints also go to <output_dir>/steps/), max_steps (caps optimizer steps; None trains
    cfg.num_train_epochs)."""
    trainer, restore_config = build_dpo_trainer(model_path, pairs_uri, output_dir, cfg, **options)
    return train_and_save(trainer, restore_config, output_dir)
