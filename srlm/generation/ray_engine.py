"""The Ray actor that hosts one vLLM engine (one data-parallel replica).

The driver sends prompt token ids and plain sampling settings and gets plain lists back, so neither side has to
unpickle vLLM objects and the driver never imports vLLM. The actor is threaded (see `actor_options`): while
`generate` runs, `progress` answers from a second thread, which is how the driver draws one progress bar.
"""

from __future__ import annotations

import os
import threading
from typing import Any

# Samples of one request, as lists: texts, generated token counts, vLLM finish reasons.
SampleLists = tuple[list[str], list[int], list[str]]


class VLLMEngineActor:
    """One `vllm.LLM`, created in the actor process with the environment the driver chose for it."""

    def __init__(self, llm_kwargs: dict[str, Any], unset_env: tuple[str, ...] = ()) -> None:
        for name in unset_env:
            os.environ.pop(name, None)
        from vllm import LLM

        self._llm = LLM(**llm_kwargs)
        # vllm.LLM is not thread-safe, and an engine pool can receive a second generate call while one runs: a
        # retried step's, while the killed first try's call is still generating (a running actor call cannot be
        # cancelled). The second waits for the first.
        self._generating = threading.Lock()
        self._bar: Any = None
        self._devnull = open(os.devnull, "w")

    def info(self) -> dict[str, Any]:
        """Where the engine runs (the actor's pid, its child processes, node id, threading) and how (eager or
        compiled, prefix caching)."""
        import ray
        import torch

        from srlm.host import descendant_pids

        config = self._llm.llm_engine.vllm_config
        return {
            "pid": os.getpid(),
            "child_pids": descendant_pids(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "torch_threads": torch.get_num_threads(),
            "niceness": os.nice(0),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            # What the engine actually runs with, as vLLM resolved the arguments (backend.engine_mode,
            # backend.enable_prefix_caching), not what was asked for.
            "enforce_eager": config.model_config.enforce_eager,
            "prefix_caching": bool(config.cache_config.enable_prefix_caching),
        }

    def generate(self, prompts: list[list[int]], sampling: dict[str, Any]) -> list[SampleLists]:
        from vllm import SamplingParams

        with self._generating:
            self._bar = None
            outputs = self._llm.generate(
                [{"prompt_token_ids": ids} for ids in prompts], SamplingParams(**sampling), use_tqdm=self._silent_bar
            )
        results: list[SampleLists] = []
        for output in outputs:
            samples = sorted(output.outputs, key=lambda s: s.index)
            results.append(
                (
                    [s.text for s in samples],
                    [len(s.token_ids) for s in samples],
                    [str(s.finish_reason) for s in samples],
                )
            )
        return results

    def _silent_bar(self, *args: Any, **kwargs: Any) -> Any:
        """The bars vLLM would draw, drawn nowhere; the one counting finished samples is kept for `progress`."""
        from tqdm import tqdm

        bar = tqdm(*args, file=self._devnull, **kwargs)
        if not args:  # an iterable means the prompt-rendering bar; the sample bar only gets a total
            self._bar = bar
        return bar

    def progress(self) -> int:
        """Samples finished so far in the running `generate` call."""
        bar = self._bar
        return bar.n if bar is not None else 0

    def shutdown(self) -> None:
        """Stop the engine and its worker processes, so their memory is free before the actor is killed."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm
            import gc

            gc.collect()


def actor_options(*, num_cpus: float, num_gpus: float, env: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Ray options for a VLLMEngineActor. The environment is set explicitly: Ray would otherwise export
    OMP_NUM_THREADS=1 to actors, which would leave vLLM's CPU worker one thread."""
    return {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        # generate, progress polls, and a second generate waiting for the first (an engine pool's retried step)
        "max_concurrency": 4,
        "max_restarts": 0,
        "runtime_env": {"env_vars": env},
        **extra,
    }
