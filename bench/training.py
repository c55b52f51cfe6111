"""Training cost: DPO with precomputed reference log-probs against the reference model in every step, and the
tokens/s of SFT and DPO, in one run.

Three variants train the same model on the same synthetic data for the same number of optimizer steps, each in its
own process (so each peak RSS is its own and nothing is warm from another variant), through the public entry points
(srlm.training.sft.train_sft, srlm.training.dpo.train_dpo) with the config flag as the only difference:

    sft                     SFT on prompt → completion examples
    dpo_precomputed         DPO, dpo.precompute_ref_log_probs: true  (a reference pass before training, no
                            reference model during the steps)
    dpo_reference_in_step   DPO, dpo.precompute_ref_log_probs: false (a reference model forward in every step)

The first optimizer step is a warm-up (allocator, optimizer state, first-call costs) and is left out of the step
times. The precomputed variant pays for its reference pass before the first step, so its setup (process start to
the first step: model loading, tokenization, and the pass) is reported beside the steps, and the totals compare
setup + timed steps. Memory: each child's peak RSS over its whole life (os.wait4) and the peak RSS sampled during
its training steps. Tokens are the Trainer's own count of non-padding input tokens (DPO: chosen and rejected).

    .venv/bin/python bench/training.py [--model DIR] [--steps 5] [--json]
    .venv/bin/python bench/training.py --smoke          # tiny model, 2 timed steps: checks the script end to end
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "sft": {"kind": "sft"},
    "dpo_precomputed": {"kind": "dpo", "precompute_ref_log_probs": True},
    "dpo_reference_in_step": {"kind": "dpo", "precompute_ref_log_probs": False},
}
WARMUP_STEPS = 1
RSS_SAMPLE_S = 0.02
MIB = 1024 * 1024
LOG_TAIL_LINES = 25

# Words the synthetic prompts and responses are drawn from: ordinary English, so they tokenize like real text.
WORDS = (
    "the model answers each question with a short clear explanation and an example that shows how the idea works "
    "in practice while a weaker answer repeats the question adds little detail and often stops before the point "
    "students teachers engineers write read compare measure build improve describe summarise plan test review "
    "water energy language music history garden kitchen city river mountain computer network memory number story"
).split()


# ------------------------------------------------------------------------------------------------ data


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def write_tables(store: Path, rows: int, response_words: int, seed: int = 0) -> dict[str, str]:
    """The synthetic sft_examples and pairs tables (the same rows for every variant: same seed), committed to a
    local store at `store`; returns their URIs."""
    import pyarrow as pa

    from srlm.store import write_table

    rng = random.Random(seed)
    prompts = [_text(rng, 24) for _ in range(rows)]
    sft = [
        {
            "example_id": f"ift-{i}",
            "kind": "ift",
            "prompt_messages": [{"role": "user", "content": prompt}],
            "completion": _text(rng, response_words),
            "source": "bench",
            "score": None,
        }
        for i, prompt in enumerate(prompts)
    ]
    pairs = [
        {
            "prompt_id": f"p{i}",
            "prompt": prompt,
            "chosen": _text(rng, response_words),
            "rejected": _text(rng, response_words * 2 // 3),
            "chosen_candidate_id": f"p{i}-c0",
            "rejected_candidate_id": f"p{i}-c1",
            "chosen_score": 5.0,
            "rejected_score": 2.0,
            "margin": 3.0,
        }
        for i, prompt in enumerate(prompts)
    ]
    uris = {"sft": str(store / "sft_examples"), "dpo": str(store / "pairs")}
    write_table(uris["sft"], pa.Table.from_pylist(sft), "sft_examples")
    write_table(uris["dpo"], pa.Table.from_pylist(pairs), "pairs")
    return uris


# ------------------------------------------------------------------------------------------------ child process


def run_variant(workload: dict[str, Any]) -> dict[str, Any]:
    """Train one variant in this process and return its measurements."""
    import threading

    import psutil
    from transformers import TrainerCallback

    from srlm.config import DPOTrainingConfig, SFTTrainingConfig
    from srlm.training.common import TrainerRuntime

    process = psutil.Process()

    class StepClock(TrainerCallback):
        """Times every optimizer step (from the end of one to the end of the next), counts tokens, and samples RSS
        from the start of training to its end."""

        def __init__(self) -> None:
            self.train_begin = 0.0
            self.step_ends: list[float] = []
            self.tokens: list[int] = []
            self.peak_rss = 0
            self._sampling = threading.Event()

        def _sample(self) -> None:
            while self._sampling.is_set():
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
                time.sleep(RSS_SAMPLE_S)

        def on_train_begin(self, args, state, control, **kwargs):
            # srlm builds the TrainingArguments; the Trainer's own token count is switched on here, for the bench.
            args.include_num_input_tokens_seen = "non_padding"
            self.train_begin = time.perf_counter()
            self._sampling.set()
            threading.Thread(target=self._sample, daemon=True).start()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends.append(time.perf_counter())
            self.tokens.append(int(state.num_input_tokens_seen))

        def on_train_end(self, args, state, control, **kwargs):
            self._sampling.clear()

    clock = StepClock()
    runtime = TrainerRuntime(callbacks=[clock])
    variant = VARIANTS[workload["variant"]]
    output_dir = Path(workload["work_dir"]) / "out"
    start = time.perf_counter()
    if variant["kind"] == "sft":
        from srlm.training.sft import train_sft

        cfg = SFTTrainingConfig(**workload["sft"])
        train_sft(workload["model"], [workload["data"]["sft"]], output_dir, cfg, max_steps=workload["max_steps"],
                  runtime=runtime)
    else:
        from srlm.training.dpo import train_dpo

        cfg = DPOTrainingConfig(**workload["dpo"], precompute_ref_log_probs=variant["precompute_ref_log_probs"])
        train_dpo(workload["model"], workload["data"]["dpo"], output_dir, cfg, max_steps=workload["max_steps"],
                  runtime=runtime)
    total = time.perf_counter() - start
    if len(clock.step_ends) <= WARMUP_STEPS:
        raise SystemExit(f"{workload['variant']}: only {len(clock.step_ends)} step(s) ran; nothing to time")
    timed = clock.step_ends[WARMUP_STEPS - 1 :]
    steps = [b - a for a, b in zip(timed, timed[1:])]
    tokens = clock.tokens[-1] - clock.tokens[WARMUP_STEPS - 1]
    return {
        "variant": workload["variant"],
        "setup_s": clock.train_begin - start,  # loading, tokenization, and (precomputed) the reference pass
        "warmup_step_s": clock.step_ends[0] - clock.train_begin,
        "step_s": steps,
        "mean_step_s": sum(steps) / len(steps),
        "timed_tokens": tokens,
        "tokens_per_s": tokens / sum(steps) if tokens else None,
        "train_peak_rss_mib": clock.peak_rss / MIB,
        "total_s": total,  # train_* call end to end, saving the final checkpoint included
    }


def child_main(workload_path: str, result_path: str) -> int:
    workload = json.loads(Path(workload_path).read_text())
    Path(result_path).write_text(json.dumps(run_variant(workload)))
    return 0


# ------------------------------------------------------------------------------------------------ parent


def default_model() -> tuple[str, str]:
    """SmolLM2-135M where `srlm model prepare smollm2-135m` put it, else ("", "") (the caller builds the tiny model)."""
    from srlm.models.cache import is_complete
    from srlm.models.prepare import default_model_dir

    prepared = default_model_dir("smollm2-135m")
    return (str(prepared), "SmolLM2-135M-Instruct (prepared)") if is_complete(prepared) else ("", "")


def run_child(variant: str, workload: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Run one variant in a fresh process; its measurements plus its lifetime peak RSS (from os.wait4)."""
    work_dir.mkdir(parents=True)
    workload = {**workload, "variant": variant, "work_dir": str(work_dir)}
    workload_path, result_path, log_path = work_dir / "workload.json", work_dir / "result.json", work_dir / "log.txt"
    workload_path.write_text(json.dumps(workload))
    env = {
        **os.environ,
        # Nothing cached from another variant or an earlier run: TRL caches reference log-probs in the datasets cache.
        "HF_DATASETS_CACHE": str(work_dir / "hf-datasets"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(workload_path), str(result_path)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or not result_path.exists():
        tail = log_path.read_text().strip().splitlines()[-LOG_TAIL_LINES:]
        raise SystemExit(f"{variant} failed (exit {process.returncode}):\n" + "\n".join(tail))
    result = json.loads(result_path.read_text())
    result["peak_rss_mib"] = usage.ru_maxrss * 1024 / MIB  # Linux reports KiB
    return result


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    pre, ref = results.get("dpo_precomputed"), results.get("dpo_reference_in_step")
    if pre and ref:
        timed = {name: r["setup_s"] + sum(r["step_s"]) for name, r in (("pre", pre), ("ref", ref))}
        summary.update(
            {
                # > 1: the precomputed variant's steps are that much faster (target ≥ 1.3)
                "dpo_step_speedup_precomputed": ref["mean_step_s"] / pre["mean_step_s"],
                # < 1: the precomputed variant needs less memory
                "dpo_peak_rss_ratio_precomputed": pre["peak_rss_mib"] / ref["peak_rss_mib"],
                "dpo_train_peak_rss_ratio_precomputed": pre["train_peak_rss_mib"] / ref["train_peak_rss_mib"],
                # The reference pass, as the extra setup time over the in-step variant (which loads a reference
                # model in its setup instead, so this slightly understates the pass).
                "dpo_reference_pass_s": pre["setup_s"] - ref["setup_s"],
                # setup + timed steps: the honest comparison at this number of steps
                "dpo_setup_plus_steps_s": {"precomputed": timed["pre"], "reference_in_step": timed["ref"]},
                "dpo_setup_plus_steps_speedup_precomputed": timed["ref"] / timed["pre"],
            }
        )
    return summary


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(report: dict[str, Any]) -> None:
    print(f"model {report['model_label']}: {report['model']}")
    print(f"{report['timed_steps']} timed steps after {WARMUP_STEPS} warm-up, batch {report['batch_size']} "
          f"(per device {report['per_device_batch_size']}), max_length {report['max_length']}, "
          f"~{report['response_words']} words per response")
    print(f"{'variant':<24}{'setup s':>9}{'step s':>9}{'tokens/s':>10}{'peak MiB':>10}{'train MiB':>11}{'total s':>9}")
    for name, r in report["results"].items():
        print(f"{name:<24}{_fmt(r['setup_s'], 1):>9}{_fmt(r['mean_step_s']):>9}{_fmt(r['tokens_per_s'], 1):>10}"
              f"{_fmt(r['peak_rss_mib'], 0):>10}{_fmt(r['train_peak_rss_mib'], 0):>11}{_fmt(r['total_s'], 1):>9}")
    s = report["summary"]
    if s:
        print(f"DPO step time, reference in step / precomputed: {s['dpo_step_speedup_precomputed']:.2f}x (target ≥ 1.3x)")
        print(f"DPO peak RSS, precomputed / reference in step: {s['dpo_peak_rss_ratio_precomputed']:.2f} "
              f"(during the steps: {s['dpo_train_peak_rss_ratio_precomputed']:.2f})")
        both = s["dpo_setup_plus_steps_s"]
        print(f"reference pass ≈ {s['dpo_reference_pass_s']:.1f} s; setup + {report['timed_steps']} steps: "
              f"{both['precomputed']:.1f} s precomputed vs {both['reference_in_step']:.1f} s in step "
              f"({s['dpo_setup_plus_steps_speedup_precomputed']:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(*argv[1:3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="Local HF model directory. Default: SmolLM2-135M when prepared, else the tiny model.")
    parser.add_argument("--steps", type=int, default=5, help="Timed optimizer steps per variant (default: 5).")
    parser.add_argument("--batch-size", type=int, default=8, help="Global batch, examples or pairs (default: 8).")
    parser.add_argument("--per-device-batch-size", type=int, default=4, help="Micro-batch (default: 4).")
    parser.add_argument("--max-length", type=int, default=512, help="Longest sequence in tokens (default: 512).")
    parser.add_argument("--response-words", type=int, default=120,
                        help="Words per response; rejected ones get two thirds (default: 120).")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="Which to run, in order (default: all).")
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny model, 2 timed steps, small batches: checks the script, measures nothing.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs, stores).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.batch_size, args.per_device_batch_size = 2, 4, 2
        args.max_length, args.response_words = 128, 30
    if args.model and not (Path(args.model).expanduser() / "config.json").is_file():
        parser.error(f"--model {args.model}: not a Hugging Face model directory (no config.json)")
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    work = Path(tempfile.mkdtemp(prefix="srlm-bench-training-"))
    try:
        if args.model:
            model, label = str(Path(args.model).expanduser().resolve()), "--model"
        else:
            model, label = ("", "") if args.smoke else default_model()
        if not model:
            from srlm.models.tiny import build_tiny_model

            model, label = str(build_tiny_model(work / "tiny-model")), "tiny test model (random weights)"
        steps = WARMUP_STEPS + args.steps
        rows = args.batch_size * steps  # one epoch is exactly the steps run: every variant sees every row once
        section = dict(batch_size=args.batch_size, per_device_batch_size=args.per_device_batch_size,
                       max_length=args.max_length, save_steps=10 * steps)  # no intermediate checkpoint export
        workload = {
            "model": model,
            "max_steps": steps,
            "sft": section,
            "dpo": {**section, "checkpoint_selection": "last"},  # no held-out split: every variant trains all rows
        }
        results = {}
        for variant in variants:
            # Each variant gets its own store with the same rows: a stored reference pass is never reused.
            variant_dir = work / variant
            data = write_tables(variant_dir / "store", rows, args.response_words)
            results[variant] = run_child(variant, {**workload, "data": data}, variant_dir / "run")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "model": model,
        "model_label": label,
        "timed_steps": args.steps,
        "batch_size": args.batch_size,
        "per_device_batch_size": args.per_device_batch_size,
        "max_length": args.max_length,
        "response_words": args.response_words,
        "results": results,
        "summary": summarise(results),
    }
    if args.keep:
        report["work_dir"] = str(work)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
