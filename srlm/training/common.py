"""Trainer arguments SFT and DPO share: batch arithmetic, precision, checkpointing and logging."""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from typing import Any

from srlm.config import MixedPrecision, effective_sharding, micro_batch
from srlm.errors import ConfigError
from srlm.training.checkpoints import CheckpointHook, export_callback
from srlm.training.modeling import load_for_training, load_tokenizer
from srlm.training.schedule import PeakToFinalLRMixin, check_schedule


@dataclass
class TrainerRuntime:
    """What the job runner (srlm.training.launch locally, srlm.training.ray_train on Ray) adds to a trainer beyond
    its config section: nothing here changes the model a job produces."""

    chat_template: str | None = None  # the resolved text of model.chat_template, for a tokenizer that has none
    callbacks: list[Any] = field(default_factory=list)  # extra TrainerCallbacks (e.g. reporting saves to Ray Train)
    # Also save the Trainer's own resumable state (weights, optimizer, scheduler, RNG, data position) every
    # save_steps as <output_dir>/checkpoint-N, so a restarted job continues instead of starting over.
    resumable_saves: bool = False
    resume_from: str | None = None  # a checkpoint-N directory of an interrupted attempt to continue from


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


def job_sharding(cfg: Any) -> str:
    """The sharding this job uses (ddp or fsdp), from its section and the devices this process sees."""
    import torch

    return effective_sharding(
        cfg.sharding, gpus=torch.cuda.is_available(), world_size=world_size(), lora=cfg.lora.enabled
    )


def decoder_layer_classes(model: Any) -> list[str]:
    """The model's transformer block classes, FSDP's wrap unit: what transformers marks as never to be split across
    devices (`_no_split_modules`, e.g. LlamaDecoderLayer)."""
    classes = sorted(set(getattr(model, "_no_split_modules", None) or []))
    if not classes:
        raise ConfigError(
            f"sharding fsdp: {type(model).__name__} names no decoder layer class (_no_split_modules), so FSDP has no "
            "wrap unit; use sharding: ddp"
        )
    return classes


def sharding_kwargs(cfg: Any, model: Any, section: str) -> dict[str, Any]:
    """TrainingArguments fields for the job's sharding. ddp needs none (accelerate wraps the model in DDP whenever
    there is more than one process). fsdp: FSDP2 full sharding of parameters, gradients and optimizer state, one
    unit per decoder layer, resharded after forward; activation checkpointing through FSDP (cheaper under FSDP than
    the Trainer's gradient_checkpointing, which re-gathers); the loaded dtype (master_weights) is what stays
    sharded while bf16 mixed precision computes; resumable saves are per-rank shards (gathering a 70B model's
    optimizer state on one rank would not fit), while srlm's exports gather one full checkpoint on rank 0."""
    import torch

    sharding = job_sharding(cfg)
    if sharding != "fsdp":
        return {}
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{section}.sharding: fsdp needs GPUs (accelerate enables FSDP only on GPU device types); use ddp or auto"
        )
    return dict(
        fsdp=True,
        fsdp_config={
            "version": 2,
            "reshard_after_forward": True,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": decoder_layer_classes(model),
            "activation_checkpointing": cfg.gradient_checkpointing,
            "cpu_offload": cfg.fsdp_offload,
            "cpu_ram_efficient_loading": True,
            "state_dict_type": "SHARDED_STATE_DICT",
        },
        gradient_checkpointing=False,
    )


def common_trainer_kwargs(
    cfg: Any,
    output_dir: str,
    section: str,
    max_steps: int | None,
    runtime: TrainerRuntime | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """TrainingArguments fields derived from an srlm SFTTrainingConfig/DPOTrainingConfig section (`model`, the loaded
    model, tells FSDP its wrap unit)."""
    resumable = runtime is not None and runtime.resumable_saves
    per_device, accumulation = batch_arithmetic(cfg.batch_size, cfg.per_device_batch_size, world_size(), section)
    import torch

    bf16 = use_bf16(cfg.mixed_precision, section)
    sharding = sharding_kwargs(cfg, model, section) if model is not None else {}
    kwargs = dict(
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
        # evaluation and early stopping (the paper picks DPO checkpoints on held-out data). The Trainer's own saves
        # (optimizer and scheduler state too) are only for resuming, so only the latest is kept.
        save_strategy="steps" if resumable else "no",
        save_steps=cfg.save_steps,
        save_total_limit=1 if resumable else None,
        save_only_model=False,
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
    kwargs.update(sharding)  # fsdp replaces the Trainer's gradient checkpointing with its own
    return kwargs


def load_for_trainer(
    model_path: str, cfg: Any, section: str, runtime: TrainerRuntime | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(tokenizer, model, restore_config) for training `model_path` under an sft/dpo section, after checking its
    learning-rate schedule (a bad schedule fails before the model is loaded)."""
    check_schedule(cfg.lr_schedule, cfg.learning_rate, cfg.final_learning_rate, section)
    tokenizer = load_tokenizer(model_path, runtime.chat_template if runtime else None)
    if job_sharding(cfg) == "fsdp":
        # Rank 0 alone reads the weights; the others build empty tensors and receive their shards when accelerate
        # shards the model (otherwise every rank of a node holds a full copy in CPU memory first).
        os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_CPU_RAM_EFFICIENT_LOADING="true")
    model, restore_config = load_for_training(model_path, cfg.dropout, cfg.master_weights)
    return tokenizer, model, restore_config


def make_trainer(
    trl_trainer: type,
    cfg: Any,
    *,
    tokenizer: Any,
    restore_config: dict[str, Any],
    on_checkpoint: CheckpointHook | None,
    runtime: TrainerRuntime | None = None,
    **trainer_kwargs: Any,
) -> Any:
    """A TRL trainer of class `trl_trainer` with srlm's peak-to-final learning-rate schedule and its intermediate
    checkpoint export (every cfg.save_steps steps, handed to `on_checkpoint`); `trainer_kwargs` are the rest
    (model, args, datasets, peft_config, …)."""
    trainer_class = type(f"Srlm{trl_trainer.__name__}", (PeakToFinalLRMixin, trl_trainer), {})
    return trainer_class(
        processing_class=tokenizer,
        callbacks=[
            export_callback(tokenizer, restore_config, cfg.save_steps, on_checkpoint),
            *(runtime.callbacks if runtime else ()),
        ],
        final_learning_rate=cfg.final_learning_rate,
        lr_schedule=cfg.lr_schedule,
        **trainer_kwargs,
    )
