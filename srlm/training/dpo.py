"""One self-rewarding DPO iteration (M_{t-1} → M_t) with TRL's DPOTrainer.

The reference model is the model at the start of the iteration (the paper's choice): `model_path` itself unless
`ref_model_path` names another. Dropout (paper: 0.1) applies to the policy only; TRL would otherwise switch it off
in both models, and the reference always runs without it.

Reference log-probs (srlm.training.reference): with `dpo.precompute_ref_log_probs` on (the default) they are
computed in one pass before training, stored with the pairs and reused by a retry, and training holds no reference
model. Off: a separate reference model computes them in every step. With LoRA the reference is the base model with
the adapters disabled, i.e. again the starting model; its log-probs are precomputed whenever dropout is on, because
computing them on the fly would run the shared base in training mode, with dropout.

Checkpoint selection (srlm.training.selection): with `dpo.checkpoint_selection: best` some pairs are held out and
every save_steps checkpoint and the last step are scored on them; the best becomes M_t.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from srlm.config import DPOTrainingConfig
from srlm.training.checkpoints import CheckpointHook, train_and_save
from srlm.training.common import (
    TrainerRuntime,
    common_trainer_kwargs,
    load_for_trainer,
    make_trainer,
    world_size,
)
from srlm.training.data import dpo_dataset
from srlm.training.modeling import load_reference, peft_config

log = logging.getLogger(__name__)


def precompute_reference(cfg: DPOTrainingConfig, lora: Any) -> bool:
    """Whether the reference log-probs are computed in a pass before training (None in the config: yes)."""
    if cfg.precompute_ref_log_probs is None:
        return True
    if lora is not None and cfg.dropout > 0 and not cfg.precompute_ref_log_probs:
        log.info("LoRA with dropout: precomputing reference log-probs so the reference runs without dropout")
        return True
    return cfg.precompute_ref_log_probs


def build_dpo_trainer(
    model_path: str,
    pairs_uri: str,
    output_dir: str | Path,
    cfg: DPOTrainingConfig,
    *,
    ref_model_path: str | None = None,
    on_checkpoint: CheckpointHook | None = None,
    max_steps: int | None = None,
    runtime: TrainerRuntime | None = None,
):
    """The configured TRL DPOTrainer and the config values to restore on save (used by train_dpo and tests). When
    precomputing, its datasets already hold the reference log-probs (computed or read from the store) and it holds
    no reference model; its train_dataset lacks the held-out pairs, which are its eval_dataset; its
    `checkpoint_selection` (srlm.training.selection.CheckpointSelection) picks M_t after training."""
    from trl import DPOConfig as TRLDPOConfig, DPOTrainer

    from srlm.store import RunLayout
    from srlm.training import reference
    from srlm.training.selection import CheckpointSelection, validation_plan

    dataset = dpo_dataset(pairs_uri)
    tokenizer, model, restore_config = load_for_trainer(model_path, cfg, "dpo", runtime)
    lora = peft_config(cfg.lora)
    precompute = precompute_reference(cfg, lora)
    plan = validation_plan(len(dataset), cfg, world_size(), max_steps)
    selection = CheckpointSelection(cfg, plan, output_dir, on_checkpoint)
    args = TRLDPOConfig(
        **common_trainer_kwargs(cfg, str(output_dir), "dpo", max_steps, runtime, model),
        **selection.eval_arguments(),
        beta=cfg.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=precompute,
        disable_dropout=cfg.dropout == 0,
        dataset_num_proc=None,
    )
    stored_uri = RunLayout.reference_log_probs(pairs_uri)
    producer = stored = None
    if precompute:
        args.device  # noqa: B018 -- sets up the process group (args.distributed_state): the producer broadcasts
        settings = reference.tokenization_settings(cfg, tokenizer.chat_template, args.bf16)
        producer = reference.reference_producer(pairs_uri, ref_model_path or model_path, settings)
        stored = reference.stored_reference(stored_uri, producer)
        if stored is not None:
            dataset = reference.attach_reference(dataset, stored)
    train_dataset, eval_dataset = plan.split(dataset)
    # Without a model of its own the reference is the untouched policy (full fine-tuning, before the first step:
    # M_{t-1}) or the base with the adapters off (LoRA). A separate one is loaded only when it computes something.
    separate = ref_model_path is not None or lora is None
    needed = not precompute or (stored is None and ref_model_path is not None)
    ref_model = load_reference(ref_model_path or model_path) if separate and needed else None
    trainer = make_trainer(
        type("ReferencePassDPOTrainer", (reference.ReferencePass, DPOTrainer), {}),
        cfg,
        tokenizer=tokenizer,
        restore_config=restore_config,
        on_checkpoint=selection.hook,
        runtime=runtime,
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=lora,
    )
    trainer.add_callback(selection.callback())
    if precompute:
        if stored is None and trainer.accelerator.is_main_process:
            reference.store_reference(stored_uri, producer, [trainer.train_dataset, trainer.eval_dataset])
        del ref_model  # the trainer's is the last reference left
        reference.free_reference(trainer)
    trainer.checkpoint_selection = selection
    return trainer, restore_config


def train_dpo(model_path: str, pairs_uri: str, output_dir: str | Path, cfg: DPOTrainingConfig, **options: Any) -> Path:
    """DPO-train `model_path` on the pairs table at `pairs_uri`; return the directory of the checkpoint that becomes
    M_t: <output_dir>/final (the last step, LoRA merged) or, when checkpoint selection picks an earlier one, its
    <output_dir>/steps/step-N. <output_dir>/selection.json records the choice. `options` are build_dpo_trainer's:
    ref_model_path, on_checkpoint (intermediate checkpoints also go to <output_dir>/steps/; the hook returns the id
    it registered one under, recorded in selection.json), runtime (srlm.training.common.TrainerRuntime), max_steps
    (caps optimizer steps; None trains cfg.num_train_epochs)."""
    trainer, restore_config = build_dpo_trainer(model_path, pairs_uri, output_dir, cfg, **options)
    runtime = options.get("runtime")
    resume_from = runtime.resume_from if runtime else None
    return train_and_save(trainer, restore_config, output_dir, resume_from, select=trainer.checkpoint_selection)
