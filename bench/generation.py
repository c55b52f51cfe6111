"""Generation throughput: the vLLM backend (engine in a Ray actor) against the transformers backend, in one run.

Both backends get the same chat prompts and sampling (default: 64 prompts × n=4, ≤128 new tokens, T 0.7,
top-p 0.9, the quickstart setting for candidates). Throughput is output tokens per second of `generate` alone;
engine start (model load, Ray, vLLM warm-up) is reported separately. Both backends are opened first and answer
two short warm-up requests outside the timing; `--rounds N` then runs the workload N times on each, alternating
which backend goes first. Output tokens per CPU-second of the whole process tree (driver, Ray, engine actor) is
reported too: on a machine shared with other jobs it is steadier than wall time.

    .venv/bin/python bench/generation.py [--model DIR] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from srlm.config import BackendConfig
from srlm.generation import Sampling, open_backend
from srlm.host import tree_cpu_seconds

DEFAULT_MODEL = "~/.cache/srlm/models/smollm2-135m"

# Used when the shipped seed prompts are not available.
BUILTIN_PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about autumn leaves.",
    "What are three tips for staying focused while studying?",
    "Summarize the plot of Romeo and Juliet in one paragraph.",
    "How do I boil an egg so the yolk stays soft?",
    "Give me a short packing list for a weekend hiking trip.",
    "What is the difference between weather and climate?",
    "Write a polite email declining a meeting invitation.",
    "Explain recursion to a ten-year-old.",
    "List five fruits that are high in vitamin C.",
    "What does a compiler do?",
    "Suggest a name for a bakery that specializes in bread.",
    "How can I improve my sleep quality?",
    "Describe the water cycle.",
    "Write a limerick about a cat who loves to cook.",
    "What are the main causes of inflation?",
    "Translate 'Good morning, how are you?' into French and Spanish.",
    "Why do we have leap years?",
    "Give three arguments for learning a second language.",
    "Explain what a black hole is in simple terms.",
    "Write a two-line motivational quote about persistence.",
    "How does a refrigerator keep food cold?",
    "What should I consider when adopting a dog?",
    "Describe the taste of a lemon to someone who has never had one.",
    "What is photosynthesis?",
    "Write a short story opening that starts on a train.",
    "How do vaccines work?",
    "Give me a simple recipe for tomato soup.",
    "What is the Pythagorean theorem and where is it used?",
    "Explain the rules of tic-tac-toe.",
    "What are good habits for writing clean code?",
    "Why is exercise good for mental health?",
]


def load_prompts(count: int) -> tuple[list[str], str]:
    """`count` prompts (repeated in order when the source has fewer), and where they came from."""
    try:
        from srlm.data.seed_data import seed_prompts

        prompts, source = seed_prompts(), "shipped seed prompts"
    except Exception:  # an older checkout without the seed set, or one whose data files are missing
        prompts, source = [], ""
    if not prompts:
        prompts, source = BUILTIN_PROMPTS, "built-in prompts"
    return [prompts[i % len(prompts)] for i in range(count)], source


@dataclass
class Measured:
    name: str
    start_s: float
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    output_tokens: int = 0
    samples: int = 0
    stopped: int = 0
    rounds: list[float] = field(default_factory=list)  # output tokens/s of each round

    def report(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "start_s": round(self.start_s, 1),
            "generate_s": round(self.seconds, 1),
            "samples": self.samples,
            "finished_by_stop": self.stopped,
            "output_tokens": self.output_tokens,
            "output_tokens_per_s": round(self.output_tokens / self.seconds, 1),
            "output_tokens_per_cpu_s": round(self.output_tokens / self.cpu_seconds, 1),
            "tokens_per_s_by_round": [round(r, 1) for r in self.rounds],
        }


def open_warm(name: str, model: str, cfg: BackendConfig, requests: list, dtype: str) -> tuple[Any, Measured]:
    """Open a backend and let it answer two short requests, so one-off costs stay out of the timing."""
    start = time.perf_counter()
    backend = open_backend(model, replace(cfg, backend=name), dtype=dtype)
    measured = Measured(name, start_s=time.perf_counter() - start)
    backend.generate(requests[:2], Sampling(n=1, max_new_tokens=8), progress=False)
    return backend, measured


def measure(backend: Any, measured: Measured, requests: list, sampling: Sampling) -> None:
    # CPU of this process tree (with a local Ray head: Ray's daemons and the engine actor, so hosting costs count);
    # unlike wall time it barely moves when other jobs compete for the cores: the steadier comparison here.
    tokens, seconds, cpu = backend.stats.output_tokens, backend.stats.seconds, tree_cpu_seconds()
    completions = backend.generate(requests, sampling)
    cpu = tree_cpu_seconds() - cpu
    tokens, seconds = backend.stats.output_tokens - tokens, backend.stats.seconds - seconds
    reasons = [r for c in completions for r in c.finish_reasons]
    measured.seconds += seconds
    measured.cpu_seconds += cpu
    measured.output_tokens += tokens
    measured.samples += len(reasons)
    measured.stopped += reasons.count("stop")
    measured.rounds.append(tokens / seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Local HF model directory (default: %(default)s).")
    parser.add_argument("--prompts", type=int, default=64, help="Number of prompts (default: %(default)s).")
    parser.add_argument("--n", type=int, default=4, help="Samples per prompt (default: %(default)s).")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.7, help="(default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=0.9, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="transformers prompts per batch (default: 16).")
    parser.add_argument("--dtype", default="auto", help="Weights dtype: auto, bfloat16, float32 (default: auto).")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="vLLM memory share (on CPU: of RAM, for the KV cache). Default: the backend config's.")
    parser.add_argument("--engine-mode", default="auto", choices=["auto", "eager", "compiled"],
                        help="backend.engine_mode of the vLLM engine (default: auto, eager on CPU).")
    parser.add_argument("--backends", default="transformers,vllm", help="Which to run, in order (default: both).")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Generate the workload this many times per backend, alternating which goes first.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    args = parser.parse_args(argv)

    model = str(Path(args.model).expanduser())
    prompts, source = load_prompts(args.prompts)
    requests = [[{"role": "user", "content": p}] for p in prompts]
    sampling = Sampling(n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    cfg = BackendConfig(transformers_batch_size=args.batch_size, num_replicas=1, engine_mode=args.engine_mode,
                        gpu_memory_utilization=args.gpu_memory_utilization)
    names = args.backends.split(",")
    opened = [open_warm(name, model, cfg, requests, args.dtype) for name in names]
    try:
        # Rounds alternate the order (A B, B A, ...) so drifting load on a shared machine hits both alike.
        for round_index in range(args.rounds):
            for backend, measured in opened if round_index % 2 == 0 else reversed(opened):
                measure(backend, measured, requests, sampling)
    finally:
        for backend, _ in opened:
            backend.close()
    results = [measured.report() for _, measured in opened]

    by_name = {r["backend"]: r for r in results}
    report: dict[str, Any] = {
        "model": model,
        "prompts": len(prompts),
        "prompt_source": source,
        "sampling": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                     "top_p": args.top_p},
        "results": results,
    }
    if {"vllm", "transformers"} <= by_name.keys():
        vllm, transformers = by_name["vllm"], by_name["transformers"]
        report["ratio_vllm_over_transformers"] = round(
            vllm["output_tokens_per_s"] / transformers["output_tokens_per_s"], 2
        )
        report["cpu_ratio_vllm_over_transformers"] = round(
            vllm["output_tokens_per_cpu_s"] / transformers["output_tokens_per_cpu_s"], 2
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(prompts)} {source} × n={args.n}, ≤{args.max_new_tokens} new tokens, T {args.temperature}, "
          f"top-p {args.top_p}; model {model}")
    print(f"{'backend':<13}{'start s':>9}{'gen s':>9}{'samples':>9}{'out tokens':>12}{'tokens/s':>10}"
          f"{'tokens/cpu-s':>14}")
    for r in results:
        print(f"{r['backend']:<13}{r['start_s']:>9}{r['generate_s']:>9}{r['samples']:>9}"
              f"{r['output_tokens']:>12}{r['output_tokens_per_s']:>10}{r['output_tokens_per_cpu_s']:>14}")
    if "ratio_vllm_over_transformers" in report:
        print(f"vllm / transformers output tokens/s: {report['ratio_vllm_over_transformers']}x "
              f"(per CPU-second: {report['cpu_ratio_vllm_over_transformers']}x)")
    return 0


if __name__ == "__main__":  # vLLM's CPU engine spawns processes: everything runs under this guard
    sys.exit(main())
