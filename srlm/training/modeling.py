"""Loading a model for training (dropout, LoRA) and saving the result as a plain, loadable checkpoint."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlm.errors import ModelError
from srlm.models.loading import check_model_files, first_line, pretrained_config, pretrained_kwargs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from srlm.config import LoraAdapterConfig

log = logging.getLogger(__name__)

# Config fields through which Hugging Face architectures expose training dropout. Llama (SmolLM2's architecture) has
# only `attention_dropout` (on attention probabilities): it has no residual or MLP dropout to set, so the paper's
# "dropout 0.1" becomes attention dropout there. Other architectures pick up whichever of these they define.
DROPOUT_FIELDS = (
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "activation_dropout",
)


def dropout_overrides(model_path: str, dropout: float) -> dict[str, float]:
    """{field: dropout} for the dropout fields `model_path`'s config defines. They must be passed at load time:
    modules read them when they are built, so changing the config afterwards does nothing."""
    config = pretrained_config(model_path)
    fields = {name: dropout for name in DROPOUT_FIELDS if isinstance(getattr(config, name, None), (int, float))}
    if dropout > 0 and not fields:
        log.warning("%s: its config has no dropout field srlm knows; training without dropout", model_path)
    return fields


def load_tokenizer(model_path: str, chat_template: str | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with `chat_template` (the resolved text of model.chat_template) in place of its own
    when given; it is saved with the trained checkpoint, so every model trained from it carries it."""
    from transformers import AutoTokenizer

    check_model_files(model_path, weights=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_path}: cannot load its tokenizer: {first_line(exc)}") from exc
    if chat_template:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise ModelError(
            f"{model_path}: the tokenizer has no chat template; srlm trains on chat-formatted data (set "
            "model.chat_template to a built-in name or a Jinja file)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_for_training(
    model_path: str, dropout: float, master_weights: str = "fp32"
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The model in its master-weights dtype (fp32, or bf16 when asked) with training dropout set; also the config
    values to put back before saving, so a saved checkpoint does not carry training-only settings into inference or
    the next training run."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_files(model_path)
    overrides = dropout_overrides(model_path, dropout)
    original = {name: getattr(pretrained_config(model_path), name) for name in overrides}
    dtype = torch.bfloat16 if master_weights == "bf16" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, **overrides, **pretrained_kwargs(model_path)
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_path}: cannot load the model: {first_line(exc)}") from exc
    return model, original


def load_reference(model_path: str) -> PreTrainedModel:
    """A frozen, dropout-free reference model (DPO)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_files(model_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, **dropout_overrides(model_path, 0.0), **pretrained_kwargs(model_path)
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_path}: cannot load the reference model: {first_line(exc)}") from exc
    model.requires_grad_(False)
    return model.eval()


def peft_config(lora: LoraAdapterConfig) -> Any:
    """A peft LoraConfig, or None when LoRA is off."""
    if not lora.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def gathered_state_dict(accelerator: Any, model: Any) -> dict[str, Any] | None:
    """The full (unsharded) state dict of a model being trained, for saving. Under FSDP the shards are gathered to
    rank 0's CPU memory, so EVERY rank must call this (it is a collective); rank 0 gets the full dict, the others an
    empty one. Without sharding it is None: save_checkpoint then saves the model's own weights, as it always did."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:  # FSDP2 included
        return None
    return accelerator.get_state_dict(model)


def save_checkpoint(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    restore_config: dict[str, Any],
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Save a full Hugging Face checkpoint (safetensors) that transformers and vLLM load directly: LoRA adapters are
    merged into a copy of the base weights, and training-only config values are put back. `state_dict`: the
    gathered weights of a sharded model (gathered_state_dict); the unwrapped `model` then only supplies the
    config and class."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain = _merged_copy(model) if _is_peft(model) else model
    saved_config = {name: getattr(plain.config, name) for name in restore_config}
    for name, value in restore_config.items():
        setattr(plain.config, name, value)
    try:
        plain.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    finally:
        for name, value in saved_config.items():
            setattr(plain.config, name, value)
    tokenizer.save_pretrained(out)
    return out


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _merged_copy(model: Any) -> Any:
    """Merge the adapters into a deep copy so training can go on with the adapters unmerged."""
    return copy.deepcopy(model).merge_and_unload()
