"""The memory and time plan of a run, before anything starts: does each job fit the cluster it is given?

A run has phases that run one after another, each releasing its GPUs before the next: the seed SFT, then per
iteration a generation engine (prompts, candidates, judgments) and DPO. Each is planned on its own against the
budget of `cluster` (or `srlm plan-resources` flags). Every figure is an estimate in bytes per device (GB = 10^9).

Notation: P parameters (exact, from the model built on the meta device: srlm.planning.architecture), L decoder
layers, h hidden size, I MLP width, kv = KV heads × head dim, V vocabulary; W world size (num_processes); S the shard
factor (W under fsdp, 1 under ddp: replicated); m bytes per master weight (4 for fp32, 2 for bf16), e bytes per
compute value (2 under bf16 mixed precision, else 4); n tokens per micro-batch = micro-batch × max_length, × 2 for
DPO (chosen + rejected); T trainable parameters (P, or the LoRA adapters: r × (in + out) per targeted Linear × L).

Training, per device:
- parameters            P × m / S  (LoRA: frozen base + adapters, replicated)
- gradients             T × m / S
- optimizer state       2 × T × m / S  (AdamW's two moments, in the master-weights dtype)
- reference model       P × 4 / S  (DPO without precomputed reference log-probs, full fine-tuning: the frozen fp32
                        reference of srlm.training.modeling; precomputed or LoRA — base with adapters disabled — 0)
- bf16 weight copies    P × 2  (ddp with bf16 compute over fp32 weights: autocast's casts, kept for backward)
- FSDP working set      (embeddings + head + 2 decoder layers) × e gathered, + 1 layer × 4 of unsharded fp32
                        gradients before their reduce-scatter (fsdp only)
- activations           per decoder layer and token, what autograd saves for backward in a Llama-style layer with
                        fused attention (no seq² term): 2 RMSNorms × (4h for the fp32 upcast of their input + 2 × e × h
                        for the normalized value and the output) + e × (3h + 2kv) (q, k, v, the attention output and
                        its contiguous copy into o_proj) + 4 × e × I (gate, SiLU(gate), up, their product):
                        layer = 8h + e × (7h + 2kv + 4I), measured exact on the tiny model (tests). Without gradient
                        checkpointing: n × (L + 1) × layer (the +1: the gradients of the layer in backward). With it:
                        n × L × e × h (each layer's input) + 2 × n × layer (one layer recomputed, and its gradients)
- logits                n × V × (e + 4 + 4)  (at the start of backward: the logits, the fp32 log-softmax the loss
                        saved, and the fp32 gradient of its input)
fsdp_offload moves the sharded parameters, gradients, optimizer state and reference to host memory; host memory per
node is then that state × the ranks on the node (min(W, gpus_per_node)). Under fsdp, rank 0's node also holds the
full checkpoint it gathers in CPU memory to save (P × m, srlm.training.modeling.gathered_state_dict) while that
state is live. CPU training (use_gpu false) keeps every term
in host memory, all W processes counted on one node. A device's budget is its memory × (1 − memory_headroom).

Generation engine (vLLM), per GPU: weights P × b / TP (b = 2, bf16, unless model.dtype float32) plus the KV cache:
2 × L × ceil(KV heads / TP) × head_dim × b bytes per token (KV heads are replicated when TP exceeds them), against
gpu_memory_utilization × device memory (vLLM's own budget); the plan reports how many max_model_len sequences fit
and needs at least one. vLLM's profiling activations and CUDA graphs are not counted (they come out of the KV space).

DPO's reference pass (precompute_ref_log_probs) is not planned on its own: it holds the same sharded weights as the
step with no gradients, optimizer state or saved activations, so it needs less than the step it precedes.

GPUs: a training job needs W GPUs; an engine num_replicas × tensor_parallel_size, each replica within a node.

Time (GPU training, an upper bound: every sequence max_length long): FLOPs per optimizer step = 6 × P × tokens
(LoRA: 4 × P × tokens; no weight gradients of the base), + 2 × P × tokens with gradient checkpointing (the
recomputed forward), + 2 × P × tokens for a reference model in the step; divided by W × peak FLOP/s × MFU, both
assumptions the report states (offload's host traffic is not modelled: expect it slower).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from srlm.errors import ConfigError

if TYPE_CHECKING:
    from srlm.config import SRLMConfig, TrainingConfig
    from srlm.planning.architecture import Architecture

GB = 1e9
TRAINING_JOBS = ("sft", "dpo")
GPU, HOST = "gpu", "host"
# Assumptions of the time estimate, stated in every report (flags of `srlm plan-resources` change them).
DEFAULT_PEAK_TFLOPS = 312.0  # dense bf16 peak of an A100; an H100 SXM is 989
DEFAULT_MFU = 0.35  # model FLOPs utilisation a well-tuned FSDP job reaches at this scale
# vLLM's default gpu_memory_utilization on a GPU / on a CPU (srlm.config BackendConfig.gpu_memory_utilization).
ENGINE_MEMORY_FRACTION = {GPU: 0.9, HOST: 0.3}


class ResourcePlanError(ConfigError):
    """The configured run cannot fit its cluster budget; the message names the job, the estimate and the budget."""


@dataclass(frozen=True)
class Budget:
    """The hardware a run is planned against: the config's cluster section (plan-resources flags override it)."""

    gpus: int | None = None
    gpu_memory_gb: float | None = None
    gpus_per_node: int | None = None
    host_memory_gb: float | None = None
    memory_headroom: float = 0.1

    @classmethod
    def from_config(cls, config: SRLMConfig) -> Budget:
        c = config.cluster
        return cls(c.gpus, c.gpu_memory_gb, c.gpus_per_node, c.host_memory_gb, c.memory_headroom)

    @property
    def given(self) -> bool:
        """Whether there is anything to check (no budget: no check, and no model lookup)."""
        return any(v is not None for v in (self.gpus, self.gpu_memory_gb, self.host_memory_gb))

    @property
    def names_gpus(self) -> bool:
        return self.gpus is not None or self.gpu_memory_gb is not None

    def usable_bytes(self, where: str) -> float | None:
        total = self.gpu_memory_gb if where == GPU else self.host_memory_gb
        return None if total is None else total * GB * (1 - self.memory_headroom)


@dataclass
class MemoryTerm:
    name: str
    bytes: float
    where: str  # GPU or HOST
    formula: str


@dataclass
class JobPlan:
    """One phase's estimate and verdict."""

    job: str  # sft, dpo, generation
    device: str  # GPU or HOST
    gpus: int  # GPUs the job needs (0 on CPU)
    settings: dict[str, Any]
    terms: list[MemoryTerm]
    ranks_per_node: int
    per_device_bytes: float = 0.0  # on the job's device (GPU, or host per process on CPU)
    device_budget_bytes: float | None = None
    host_per_node_bytes: float = 0.0  # the node of rank 0: its ranks' host state + the gathered checkpoint
    checkpoint_host_bytes: float = 0.0  # fsdp: the full checkpoint rank 0 gathers in its CPU memory to save it
    host_budget_bytes: float | None = None
    sequences_fit: int | None = None  # generation: max_model_len sequences in the KV cache
    timing: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems


@dataclass
class ResourcePlan:
    model: str
    architecture: dict[str, Any]
    budget: Budget
    jobs: list[JobPlan]
    assumptions: list[str]

    @property
    def fits(self) -> bool:
        return all(job.fits for job in self.jobs)

    @property
    def problems(self) -> list[str]:
        return [problem for job in self.jobs for problem in job.problems]

    def refusal(self) -> str:
        return "the run does not fit its cluster budget: " + "; ".join(self.problems)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fits"] = self.fits
        for job, plan in zip(data["jobs"], self.jobs, strict=True):
            job["fits"] = plan.fits
        return data


# --------------------------------------------------------------------------------------------------------- planning


def plan_resources(
    config: SRLMConfig,
    budget: Budget | None = None,
    *,
    peak_tflops: float = DEFAULT_PEAK_TFLOPS,
    mfu: float = DEFAULT_MFU,
) -> ResourcePlan:
    """The plan of every phase of `config`'s run against `budget` (default: the config's cluster section)."""
    from srlm.planning.architecture import model_architecture

    budget = budget or Budget.from_config(config)
    arch = model_architecture(config.model.base, config.model.cache_dir)
    jobs = [_training_plan(name, getattr(config, name), arch, budget, peak_tflops, mfu) for name in TRAINING_JOBS]
    jobs += [_engine_plan(config, label, engine_arch, budget) for label, engine_arch in _engines(config, arch)]
    for job in jobs:
        _check(job, budget)
    assumptions = [
        "phases run one after another (an engine releases its GPUs before training)",
        "every training sequence is max_length tokens long (shorter or unpadded batches need less)",
        f"time: {peak_tflops:g} TFLOP/s peak per GPU at {mfu:.0%} MFU (--peak-tflops, --mfu)",
        f"device budget: memory × (1 − memory_headroom {budget.memory_headroom:g}); engines: gpu_memory_utilization",
    ]
    summary = {k: getattr(arch, k) for k in ("source", "model_type", "parameters", "num_layers", "hidden_size",
                                               "intermediate_size", "num_kv_heads", "head_dim", "vocab_size")}  # fmt: skip
    return ResourcePlan(config.model.base, summary, budget, jobs, assumptions)


def refuse_unfit_plan(config: SRLMConfig) -> ResourcePlan | None:
    """Raise ResourcePlanError (one line: job, estimate, budget) when the config gives a cluster budget its run
    cannot fit; None (nothing looked up) when it gives none."""
    budget = Budget.from_config(config)
    if not budget.given:
        return None
    plan = plan_resources(config, budget)
    if not plan.fits:
        raise ResourcePlanError(plan.refusal())
    return plan


def _on_gpu(cfg: TrainingConfig, budget: Budget) -> bool:
    # use_gpu None means "whatever the cluster has": plan on GPUs when the budget names GPUs.
    return cfg.use_gpu if cfg.use_gpu is not None else budget.names_gpus


def _lora_parameters(cfg: TrainingConfig, arch: Architecture) -> int:
    target = cfg.lora.target_modules
    chosen = [
        (i, o) for name, i, o in arch.linears
        if target == "all-linear" or re.fullmatch(target, f"model.layers.0.{name}") or name.split(".")[-1] == target
    ]  # fmt: skip
    return arch.num_layers * sum(cfg.lora.r * (i + o) for i, o in chosen)


def layer_activation_bytes(arch: Architecture, compute_bytes: int) -> int:
    """Bytes one decoder layer saves for backward per token (the module docstring's `layer`)."""
    h, kv, inner, e = arch.hidden_size, arch.kv_dim, arch.intermediate_size, compute_bytes
    return 8 * h + e * (7 * h + 2 * kv + 4 * inner)


def _training_plan(
    name: str, cfg: TrainingConfig, arch: Architecture, budget: Budget, peak_tflops: float, mfu: float
) -> JobPlan:
    from srlm.config import effective_sharding, micro_batch

    on_gpu = _on_gpu(cfg, budget)
    world = cfg.num_processes
    sharding = effective_sharding(cfg.sharding, gpus=on_gpu, world_size=world)
    shards = world if sharding == "fsdp" else 1
    offload = sharding == "fsdp" and cfg.fsdp_offload
    m = 2 if cfg.master_weights == "bf16" else 4
    bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and on_gpu)  # CPU auto: assume fp32
    e = 2 if bf16 else 4
    micro = micro_batch(cfg.batch_size, cfg.per_device_batch_size, world)
    accumulation = cfg.batch_size // (micro * world)
    sequences = 2 if name == "dpo" else 1
    tokens = micro * cfg.max_length * sequences
    p = arch.parameters
    lora = cfg.lora.enabled
    trainable = _lora_parameters(cfg, arch) if lora else p
    precompute = name == "dpo" and cfg.precompute_ref_log_probs is not False
    reference = name == "dpo" and not precompute and not lora
    state_where = HOST if offload or not on_gpu else GPU
    where = GPU if on_gpu else HOST
    per_token = layer_activation_bytes(arch, e)
    if cfg.gradient_checkpointing:
        activations = tokens * arch.num_layers * e * arch.hidden_size + 2 * tokens * per_token
        activation_formula = "n×L×e×h + 2×n×layer"
    else:
        activations = tokens * (arch.num_layers + 1) * per_token
        activation_formula = "n×(L+1)×layer"
    terms = [
        MemoryTerm("parameters", (p + (trainable if lora else 0)) * m / shards, state_where,
                   "(P+T)×m" if lora else "P×m/S"),
        MemoryTerm("gradients", trainable * m / shards, state_where, "T×m/S"),
        MemoryTerm("optimizer state (AdamW)", 2 * trainable * m / shards, state_where, "2×T×m/S"),
    ]
    if name == "dpo":
        terms.append(MemoryTerm("reference model", p * 4 / shards if reference else 0.0, state_where,
                                "P×4/S" if reference else "none (precomputed)" if precompute
                                else "none (LoRA: adapters off)"))  # fmt: skip
    if sharding == "fsdp":
        gathered = (arch.embedding_parameters + 2 * arch.layer_parameters) * e + arch.layer_parameters * 4
        terms.append(MemoryTerm("FSDP working set", gathered, where, "(emb+2×layer)×e + layer×4"))
    elif bf16 and m == 4:
        terms.append(MemoryTerm("bf16 weight copies", p * 2, where, "P×2"))
    terms += [
        MemoryTerm("activations", activations, where, activation_formula),
        MemoryTerm("logits", tokens * arch.vocab_size * (e + 8), where, "n×V×(e+8)"),
    ]
    ranks_per_node = min(world, budget.gpus_per_node or world) if on_gpu else world
    host_per_rank = sum(t.bytes for t in terms if t.where == HOST)
    plan = JobPlan(
        job=name,
        device=where,
        gpus=world if on_gpu else 0,
        settings={
            "backend": cfg.backend, "world_size": world, "sharding": sharding, "fsdp_offload": offload,
            "compute": "bf16" if bf16 else "fp32", "master_weights": cfg.master_weights,
            "gradient_checkpointing": cfg.gradient_checkpointing, "micro_batch": micro,
            "gradient_accumulation": accumulation, "global_batch": cfg.batch_size, "max_length": cfg.max_length,
            "tokens_per_micro_batch": tokens, "lora": lora, "trainable_parameters": trainable,
            "reference": "in memory" if reference else "precomputed" if precompute else "none",
        },  # fmt: skip
        terms=terms,
        ranks_per_node=ranks_per_node,
        per_device_bytes=sum(t.bytes for t in terms if t.where == where),
        checkpoint_host_bytes=p * m if sharding == "fsdp" else 0.0,
    )
    plan.host_per_node_bytes = host_per_rank * ranks_per_node + plan.checkpoint_host_bytes
    if on_gpu:
        step_tokens = cfg.batch_size * cfg.max_length * sequences
        flops_per_token = (4 if lora else 6) * p + (2 * p if cfg.gradient_checkpointing else 0)
        flops_per_token += 2 * p if reference else 0
        seconds = flops_per_token * step_tokens / (world * peak_tflops * 1e12 * mfu)
        plan.timing = {
            "tokens_per_step": step_tokens, "flops_per_step": flops_per_token * step_tokens,
            "seconds_per_step": seconds, "tokens_per_second": step_tokens / seconds,
            "offload_not_modelled": offload,
        }  # fmt: skip
    return plan


def _engines(config: SRLMConfig, arch: Architecture) -> list[tuple[str, Architecture]]:
    """(job name, architecture) of each engine the run opens, one at a time: one on M_t (trained from model.base),
    and one per other model prompts.model / judge.model name (a registered M<t> id is the policy's architecture)."""
    from srlm.checkpoint_ids import looks_like_checkpoint_id
    from srlm.planning.architecture import model_architecture

    engines = [("generation", arch)]
    for key in ("prompts", "judge"):
        spec = getattr(config, key).model
        if spec and spec != config.model.base and not looks_like_checkpoint_id(spec):
            engines.append((f"generation ({key}.model)", model_architecture(spec, config.model.cache_dir)))
    return engines


def _engine_plan(config: SRLMConfig, job: str, arch: Architecture, budget: Budget) -> JobPlan:
    backend = config.backend
    on_gpu = budget.names_gpus
    where = GPU if on_gpu else HOST
    tp = backend.tensor_parallel_size if on_gpu else 1
    b = 4 if config.model.dtype == "float32" or (config.model.dtype == "auto" and not on_gpu) else 2
    kv_heads = math.ceil(arch.num_kv_heads / tp)
    kv_per_token = 2 * arch.num_layers * kv_heads * arch.head_dim * b
    weights = arch.parameters * b / tp
    fraction = backend.gpu_memory_utilization or ENGINE_MEMORY_FRACTION[where]
    total = budget.gpu_memory_gb if on_gpu else budget.host_memory_gb
    engine_budget = None if total is None else fraction * total * GB
    sequence_bytes = kv_per_token * backend.max_model_len
    plan = JobPlan(
        job=job,
        device=where,
        gpus=backend.num_replicas * tp if on_gpu else 0,
        settings={
            "num_replicas": backend.num_replicas, "tensor_parallel_size": tp, "max_model_len": backend.max_model_len,
            "memory_fraction": fraction, "kv_bytes_per_token": kv_per_token, "weights_dtype": "bf16" if b == 2 else
            "fp32",
        },  # fmt: skip
        terms=[
            MemoryTerm("weights", weights, where, "P×b/TP"),
            MemoryTerm("KV cache, one max_model_len sequence", sequence_bytes, where,
                       "2×L×ceil(kv_heads/TP)×head_dim×b×max_model_len"),
        ],  # fmt: skip
        ranks_per_node=tp,
        per_device_bytes=weights + sequence_bytes,
        device_budget_bytes=engine_budget,
    )
    if engine_budget is not None:
        plan.sequences_fit = max(0, int((engine_budget - weights) // sequence_bytes))
    return plan


def _gb(value: float) -> str:
    return f"{value / GB:,.1f} GB"


def _check(job: JobPlan, budget: Budget) -> None:
    """Fill in the job's budgets and the one-line reasons it does not fit."""
    if job.gpus and budget.gpus is not None and job.gpus > budget.gpus:
        what = "num_replicas × tensor_parallel_size" if job.job.startswith("generation") else "num_processes"
        job.problems.append(f"{job.job}: needs {job.gpus} GPUs ({what}), the budget has {budget.gpus}")
    if job.job.startswith("generation"):
        tp = job.settings["tensor_parallel_size"]
        if job.device == GPU and budget.gpus_per_node is not None and tp > budget.gpus_per_node:
            job.problems.append(f"{job.job}: tensor_parallel_size {tp} spans nodes of {budget.gpus_per_node} GPUs")
        if job.sequences_fit is not None and job.sequences_fit < 1:
            job.problems.append(
                f"{job.job}: {_gb(job.per_device_bytes)} per {job.device} (weights + one max_model_len sequence of "
                f"KV cache) > {_gb(job.device_budget_bytes)} budget ({job.settings['memory_fraction']:g} × "
                f"{budget.gpu_memory_gb if job.device == GPU else budget.host_memory_gb:g} GB)"
            )
        return
    job.device_budget_bytes = budget.usable_bytes(job.device)
    if job.device_budget_bytes is not None and job.device == GPU and job.per_device_bytes > job.device_budget_bytes:
        job.problems.append(
            f"{job.job}: {_gb(job.per_device_bytes)} per GPU > {_gb(job.device_budget_bytes)} budget "
            f"({budget.gpu_memory_gb:g} GB × (1 − headroom {budget.memory_headroom:g}))"
            + ("" if job.settings["fsdp_offload"] or job.settings["sharding"] != "fsdp" else "; try fsdp_offload")
        )
    job.host_budget_bytes = budget.usable_bytes(HOST)
    if job.host_budget_bytes is not None and job.host_per_node_bytes > job.host_budget_bytes:
        job.problems.append(
            f"{job.job}: {_gb(job.host_per_node_bytes)} host memory on rank 0's node ({job.ranks_per_node} ranks"
            f"{' + the gathered checkpoint' if job.checkpoint_host_bytes else ''}) > "
            f"{_gb(job.host_budget_bytes)} budget ({budget.host_memory_gb:g} GB × (1 − headroom "
            f"{budget.memory_headroom:g}))"
        )


# ---------------------------------------------------------------------------------------------------------- report


def _budget_words(b: Budget) -> list[str]:
    words = [f"{b.gpus} GPUs" if b.gpus is not None else None,
             f"{b.gpu_memory_gb:g} GB each" if b.gpu_memory_gb is not None else None,
             f"{b.gpus_per_node} per node" if b.gpus_per_node is not None else None,
             f"host {b.host_memory_gb:g} GB per node" if b.host_memory_gb is not None else None]  # fmt: skip
    return [word for word in words if word]


LABEL = 42  # width of the term column of format_plan


def format_plan(plan: ResourcePlan, source: str = "config") -> str:
    """The plan as text: one block per phase with its terms, totals, budgets, verdict and time estimate."""
    arch = plan.architecture
    b = plan.budget
    lines = [
        f"Resource plan for {source}: model {plan.model} ({arch['source']}): {arch['parameters'] / 1e9:,.2f} B "
        f"parameters, {arch['num_layers']} layers, hidden {arch['hidden_size']}, {arch['num_kv_heads']} KV heads × "
        f"{arch['head_dim']}, vocabulary {arch['vocab_size']:,}",
        "Budget: " + (", ".join(_budget_words(b)) + f", headroom {b.memory_headroom:g}" if b.given
                      else "none given (estimates only)"),
    ]
    for job in plan.jobs:
        s = job.settings
        if job.job.startswith("generation"):
            head = (f"{job.job} engine: {s['num_replicas']} × TP {s['tensor_parallel_size']} = {job.gpus} GPUs, "
                    f"{s['weights_dtype']} weights, max_model_len {s['max_model_len']}, "
                    f"KV {s['kv_bytes_per_token'] / 1e3:,.1f} kB per token per {job.device}")  # fmt: skip
        else:
            head = (f"{job.job}: {s['backend']}, {s['world_size']} × {job.device}, {s['sharding']}"
                    f"{' + offload' if s['fsdp_offload'] else ''}, {s['compute']} compute, {s['master_weights']} "
                    f"master weights, checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, micro-batch "
                    f"{s['micro_batch']} × accumulation {s['gradient_accumulation']} × {s['world_size']} = "
                    f"{s['global_batch']}, {s['tokens_per_micro_batch']:,} tokens per micro-batch, reference "
                    f"{s['reference']}")  # fmt: skip
        lines += ["", f"{head}: {'fits' if job.fits else 'DOES NOT FIT'}"]
        for term in job.terms:
            lines.append(f"  {term.name:<{LABEL}} {term.bytes / GB:>9,.1f} GB  {term.where:<4}  {term.formula}")
        budget = "" if job.device_budget_bytes is None else f" of {_gb(job.device_budget_bytes)}"
        lines.append(f"  {'total per ' + job.device:<{LABEL}} {job.per_device_bytes / GB:>9,.1f} GB{budget}")
        if job.host_per_node_bytes and job.device == GPU:
            budget = "" if job.host_budget_bytes is None else f" of {_gb(job.host_budget_bytes)}"
            what = f"host, rank 0's node ({job.ranks_per_node} ranks" + (
                " + checkpoint)" if job.checkpoint_host_bytes else ")")
            lines.append(f"  {what:<{LABEL}} {job.host_per_node_bytes / GB:>9,.1f} GB{budget}")
        if job.sequences_fit is not None:
            lines.append(f"  max_model_len sequences the KV cache holds: {job.sequences_fit:,}")
        if job.timing:
            t = job.timing
            lines.append(
                f"  time per optimizer step ≈ {t['seconds_per_step']:,.1f} s, {t['tokens_per_second']:,.0f} tokens/s "
                f"({t['tokens_per_step']:,} tokens, {t['flops_per_step']:.2e} FLOPs"
                + ("; offload traffic not modelled: slower)" if t["offload_not_modelled"] else ")")
            )
        lines += [f"  ✗ {problem}" for problem in job.problems]
    lines += ["", "Assumptions: " + "; ".join(plan.assumptions) + ".",
              f"Verdict: {'fits' if plan.fits else 'does not fit'}."]  # fmt: skip
    return "\n".join(lines)
