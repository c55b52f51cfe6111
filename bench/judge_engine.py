"""The judge workload on vLLM engines: prefix caching on ÷ off, eager ÷ compiled, and request order, in one run.

The judge step sends each candidate as the paper's rubric with the prompt and the response pasted in, sampled K
times: every request starts with the same ~230-token rubric, a prompt's N candidates also share its instruction,
and the K samples of one candidate share all of it. How much of that prefix work vLLM's prefix cache saves, and
whether a CPU engine should compile, decide how long judging takes.

One run: first the candidates (`--prompts` shipped seed prompts × `--candidates` responses of ≤ 128 tokens,
T 0.7, top-p 0.9, from the model itself on an eager engine), then, for each variant, a fresh process that opens the
vLLM backend as the judge step does (an engine in a Ray actor on a local Ray head), judges every candidate
`--samples` times (≤ `--max-new-tokens` tokens, T 0.7, top-p 0.9) and closes it. Each variant therefore starts
cold: the compile of a compiled engine and the empty prefix cache are part of what it measures. Variants run one
after another, never side by side.

Variants are `mode,cache,order`: mode `eager` or `compiled` (backend.engine_mode), cache `prefix` or `noprefix`
(backend.enable_prefix_caching), order `grouped` (a prompt's candidates one after another, as the judge step sends
them) or `shuffled` (seeded random order). Reported per variant: engine start, judge seconds, judgments/s, output
and prompt tokens, parse rate; then the ratios.

    .venv/bin/python bench/judge_engine.py [--model DIR] [--prompts 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from srlm.config import BackendConfig
from srlm.generation import Sampling, open_backend
from srlm.host import tree_cpu_seconds

DEFAULT_MODEL = "~/.cache/srlm/models/smollm2-135m"
DEFAULT_VARIANTS = (
    "eager,prefix,grouped",
    "eager,noprefix,grouped",
    "compiled,prefix,grouped",
    "compiled,noprefix,grouped",
    "eager,prefix,shuffled",
)
MODES, CACHES, ORDERS = ("eager", "compiled"), ("prefix", "noprefix"), ("grouped", "shuffled")


def parse_variant(text: str) -> tuple[str, str, str]:
    parts = tuple(text.split(","))
    if len(parts) != 3 or parts[0] not in MODES or parts[1] not in CACHES or parts[2] not in ORDERS:
        raise argparse.ArgumentTypeError(
            f"variant {text!r}: expected mode,cache,order with mode in {MODES}, cache in {CACHES}, order in {ORDERS}"
        )
    return parts  # type: ignore[return-value]


def backend_config(args: argparse.Namespace, mode: str, cache: str) -> BackendConfig:
    return BackendConfig(
        backend="vllm", num_replicas=1, max_model_len=args.max_model_len, engine_mode=mode,
        enable_prefix_caching=cache == "prefix", gpu_memory_utilization=args.gpu_memory_utilization,
    )


def write_candidates(args: argparse.Namespace, out: Path) -> None:
    """The model's own candidates for the first `--prompts` shipped seed prompts, as the generate step samples."""
    from srlm.data.seed_data import seed_prompts

    prompts = seed_prompts()[: args.prompts]
    backend = open_backend(args.model, backend_config(args, "eager", "prefix"))
    try:
        sampling = Sampling(n=args.candidates, temperature=0.7, top_p=0.9, max_new_tokens=128)
        completions = backend.generate([[{"role": "user", "content": p}] for p in prompts], sampling, progress=False)
    finally:
        backend.close()
    rows = [{"prompt": p, "response": text} for p, c in zip(prompts, completions, strict=True) for text in c.texts]
    out.write_text(json.dumps(rows), encoding="utf-8")


def judge_variant(args: argparse.Namespace, variant: tuple[str, str, str], candidates: Path, out: Path) -> None:
    """Open a fresh engine in `variant`'s mode, judge every candidate as the judge step does, close it."""
    from srlm.judging.parse import parse_score
    from srlm.judging.template import load_template
    from srlm.steps.judge import judge_request

    mode, cache, order = variant
    rows = json.loads(candidates.read_text(encoding="utf-8"))
    if order == "shuffled":
        random.Random(0).shuffle(rows)
    template = load_template()
    requests = [judge_request(template, row["prompt"], row["response"]) for row in rows]
    sampling = Sampling(n=args.samples, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens)
    start = time.perf_counter()
    backend = open_backend(args.model, backend_config(args, mode, cache))
    try:
        start_s = time.perf_counter() - start
        cpu = tree_cpu_seconds()
        begin = time.perf_counter()
        completions = backend.generate(requests, sampling, progress=False)
        judge_s = time.perf_counter() - begin
        cpu = tree_cpu_seconds() - cpu
        stats = backend.stats
    finally:
        backend.close()
    texts = [text for c in completions for text in c.texts]
    result = {
        "variant": ",".join(variant),
        "start_s": round(start_s, 1),
        "judge_s": round(judge_s, 1),
        "total_s": round(start_s + judge_s, 1),
        "judgments": len(texts),
        "judgments_per_s": round(len(texts) / judge_s, 3),
        "output_tokens": stats.output_tokens,
        # Sampled judgments differ in length between variants; tokens/s corrects for that.
        "output_tokens_per_s": round(stats.output_tokens / judge_s, 1),
        "prompt_tokens": stats.prompt_tokens,  # per request, not per sample: what the K samples share
        "judge_cpu_s": round(cpu, 1),
        "parse_rate": round(sum(parse_score(t).ok for t in texts) / len(texts), 3),
    }
    out.write_text(json.dumps(result), encoding="utf-8")


def workload_options(args: argparse.Namespace) -> list[str]:
    """The command-line options a child process needs to run the same workload."""
    options = ["--model", args.model, "--prompts", str(args.prompts), "--candidates", str(args.candidates),
               "--samples", str(args.samples), "--max-new-tokens", str(args.max_new_tokens),
               "--max-model-len", str(args.max_model_len)]
    if args.gpu_memory_utilization is not None:
        options += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    return options


def run_child(argv: list[str]) -> None:
    subprocess.run([sys.executable, __file__, *argv], check=True)


def ratio(results: dict[str, dict[str, Any]], a: str, b: str, key: str) -> float | None:
    """results[a][key] ÷ results[b][key], or None when either variant was not run."""
    if a not in results or b not in results:
        return None
    return round(results[a][key] / results[b][key], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Local HF model directory (default: %(default)s).")
    parser.add_argument("--prompts", type=int, default=8, help="Seed prompts (default: %(default)s).")
    parser.add_argument("--candidates", type=int, default=4, help="Candidates per prompt (default: %(default)s).")
    parser.add_argument("--samples", type=int, default=3, help="Judgments per candidate (default: %(default)s).")
    parser.add_argument("--max-new-tokens", type=int, default=112, help="Per judgment (default: the quickstart's).")
    parser.add_argument("--max-model-len", type=int, default=1024, help="(default: the quickstart's %(default)s)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="vLLM memory share (on CPU: of RAM, for the KV cache). Default: the backend config's.")
    parser.add_argument("--variants", type=parse_variant, nargs="+", default=[parse_variant(v) for v in DEFAULT_VARIANTS],
                        help="mode,cache,order triples, run in this order (default: %(default)s).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # candidates OUT | judge VARIANT IN OUT
    args = parser.parse_args(argv)
    args.model = str(Path(args.model).expanduser())

    if args.child:
        if args.child[0] == "candidates":
            write_candidates(args, Path(args.child[1]))
        else:
            judge_variant(args, parse_variant(args.child[1]), Path(args.child[2]), Path(args.child[3]))
        return 0

    passed = workload_options(args)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="srlm-bench-judge-") as tmp:
        candidates = Path(tmp, "candidates.json")
        run_child([*passed, "--child", "candidates", str(candidates)])
        for variant in args.variants:
            out = Path(tmp, f"{'-'.join(variant)}.json")
            run_child([*passed, "--child", "judge", ",".join(variant), str(candidates), str(out)])
            results[",".join(variant)] = json.loads(out.read_text(encoding="utf-8"))
        num_candidates = len(json.loads(candidates.read_text(encoding="utf-8")))

    ratios = {
        "judge_throughput_prefix_over_noprefix_eager": ratio(
            results, "eager,prefix,grouped", "eager,noprefix,grouped", "judgments_per_s"),
        "judge_throughput_prefix_over_noprefix_compiled": ratio(
            results, "compiled,prefix,grouped", "compiled,noprefix,grouped", "judgments_per_s"),
        "judge_throughput_compiled_over_eager": ratio(
            results, "compiled,prefix,grouped", "eager,prefix,grouped", "judgments_per_s"),
        "start_compiled_over_eager": ratio(results, "compiled,prefix,grouped", "eager,prefix,grouped", "start_s"),
        "total_compiled_over_eager": ratio(results, "compiled,prefix,grouped", "eager,prefix,grouped", "total_s"),
        "judge_tokens_per_s_grouped_over_shuffled": ratio(
            results, "eager,prefix,grouped", "eager,prefix,shuffled", "output_tokens_per_s"),
    }
    report = {
        "model": args.model,
        "candidates": num_candidates,
        "workload": {"prompts": args.prompts, "candidates_per_prompt": args.candidates, "samples": args.samples,
                     "max_new_tokens": args.max_new_tokens, "max_model_len": args.max_model_len},
        "results": list(results.values()),
        "ratios": {k: v for k, v in ratios.items() if v is not None},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{num_candidates} candidates ({args.prompts} seed prompts × {args.candidates}) × {args.samples} judgments, "
          f"≤{args.max_new_tokens} tokens each; model {args.model}")
    print(f"{'variant':<26}{'start s':>9}{'judge s':>9}{'total s':>9}{'judg/s':>8}{'out tok':>9}{'tok/s':>8}"
          f"{'cpu s':>8}{'parsed':>8}")
    for r in results.values():
        print(f"{r['variant']:<26}{r['start_s']:>9}{r['judge_s']:>9}{r['total_s']:>9}{r['judgments_per_s']:>8}"
              f"{r['output_tokens']:>9}{r['output_tokens_per_s']:>8}{r['judge_cpu_s']:>8}{r['parse_rate']:>8}")
    for name, value in report["ratios"].items():
        print(f"{name}: {value}x")
    return 0


if __name__ == "__main__":  # vLLM's CPU engine spawns processes: everything runs under this guard
    sys.exit(main())
