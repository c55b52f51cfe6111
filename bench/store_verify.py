"""The cost of verified reads: a committed table and a checkpoint read with their checksums checked vs unchecked.

Side by side in one run, on the same committed artifacts in a local store:
- a `judgments` table (default 500k rows: realistic judge texts of ~60 words, scores, ids) read whole and as the
  3 columns the pairs step reads: unchecked (verify=False), checked cold (hashed while read, nothing
  remembered) and checked warm (a remembered check whose file is unchanged: no hashing);
- a checkpoint directory (default: a synthetic ~500 MB model.safetensors + config.json) fetched and loaded with
  safetensors (fetch_directory + safetensors.torch.load_file, each tensor copied into memory): unchecked, checked cold, checked warm.
Every variant runs `--rounds` times in rotating order after one untimed read, so all read from the page cache;
the best wall time and the best CPU time of the process (all threads) are reported, and each checked variant as
a ratio to the unchecked one (cold 1.08 = 8% slower). The target is under 10% for the cold whole-table and
checkpoint reads.

    .venv/bin/python bench/store_verify.py                          # 500k rows, 500 MB checkpoint
    .venv/bin/python bench/store_verify.py --rows 20000 --checkpoint-mb 20 --rounds 2   # a quick look
    .venv/bin/python bench/store_verify.py --model DIR              # a real checkpoint directory instead
    .venv/bin/python bench/store_verify.py --model DIR --load transformers   # ... loaded as the steps load it
    .venv/bin/python bench/store_verify.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from srlm.store import artifacts, integrity
from srlm.store.schemas import schema

PAIRS_COLUMNS = ["candidate_id", "score", "parse_ok"]  # what the pairs step reads of judgments


def judgments_table(rows: int, seed: int = 0) -> pa.Table:
    """`rows` judge samples: 4 candidates × 3 samples per prompt, ~60-word texts from a 5k-word vocabulary."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i:x}{'abcdefgh'[i % 8] * (i % 7 + 1)}" for i in range(5000)])
    lengths = rng.integers(30, 90, size=rows)
    words = vocabulary[rng.integers(0, len(vocabulary), size=int(lengths.sum()))]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    scores = rng.integers(1, 6, size=rows)
    texts = [
        " ".join(words[bounds[i] : bounds[i + 1]]) + f"\nScore: {scores[i]}" for i in range(rows)
    ]  # the judge's own final line, as the parser reads it
    index = np.arange(rows)
    prompt_ids = [f"p{i // 12:07d}" for i in index]
    return pa.Table.from_pydict(
        {
            "prompt_id": prompt_ids,
            "candidate_id": [f"{p}-c{(i // 3) % 4}" for p, i in zip(prompt_ids, index)],
            "sample_index": pa.array(index % 3, pa.int32()),
            "judgment": texts,
            "score": pa.array(scores.astype(np.float64)),
            "parse_ok": pa.array(np.ones(rows, dtype=bool)),
            "parse_error": pa.nulls(rows, pa.string()),
            "judge_model": ["M0"] * rows,
        },
        schema=schema("judgments"),
    )


def synthetic_checkpoint(directory: Path, megabytes: int) -> Path:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 576}))
    rng = np.random.default_rng(0)
    per_tensor = 16 * 2**20 // 4  # 16 MB float32 tensors, like a layer's weights
    count = max(1, megabytes * 2**20 // (per_tensor * 4))
    tensors = {f"model.layers.{i}.weight": rng.standard_normal(per_tensor, dtype=np.float32) for i in range(count)}
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def load_weights(path: Path) -> int:
    """Load every weight into memory (safetensors maps the file; the copy reads each byte, as loading a model's
    parameters or moving them to a device does)."""
    from safetensors.torch import load_file

    return sum(t.clone().numel() for f in sorted(path.glob("*.safetensors")) for t in load_file(f).values())


def load_model(path: Path) -> int:
    """What the steps do with a checkpoint: transformers builds the model from it (CPU, its saved dtype)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).num_parameters()


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def cold(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` with nothing remembered: every checked file is hashed."""

    def run() -> Any:
        artifacts.verified_files.forget()
        with tempfile.TemporaryDirectory() as records:  # no on-disk records either
            os.environ[artifacts.CACHE_DIR_ENV] = records
            return fn()

    return run


def measure(variants: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict[str, float]]:
    """Best wall and CPU seconds per variant over `rounds` (the least disturbed by other jobs on the machine),
    rotating which goes first, after one untimed run of each."""
    for fn in variants.values():
        fn()
    names = list(variants)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(variants[name]))
    return {
        name: {"wall": min(w for w, _ in values), "cpu": min(c for _, c in values)} for name, values in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--checkpoint-mb", type=int, default=500)
    parser.add_argument("--model", help="A checkpoint directory to commit and load instead of the synthetic one.")
    parser.add_argument(
        "--load", choices=("weights", "transformers"), default="weights",
        help="How to load the checkpoint: copy its safetensors weights into memory, or (with --model) build the "
        "model with transformers' from_pretrained.",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", help="Where to put the store (default: a temporary directory).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.load == "transformers" and not args.model:
        parser.error("--load transformers needs --model DIR (the synthetic checkpoint is not a real model)")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        os.environ[artifacts.CACHE_DIR_ENV] = str(root / "cache")
        table_uri, model_uri = str(root / "store" / "judgments"), str(root / "store" / "models" / "M0")
        table = judgments_table(args.rows)
        table_manifest = artifacts.write_table(table_uri, table, "judgments")
        del table
        source = Path(args.model) if args.model else synthetic_checkpoint(root / "ckpt", args.checkpoint_mb)
        model_manifest = artifacts.write_directory(model_uri, source)
        # Files changed within the racy window are never remembered; let them settle so "warm" is warm.
        time.sleep(integrity.RACY_WINDOW_NS / 1e9 + 0.1)

        def read(verify: bool, columns: list[str] | None = None) -> Callable[[], Any]:
            return lambda: artifacts.read_table(table_uri, columns=columns, verify=verify)

        load = load_model if args.load == "transformers" else load_weights

        def fetch_and_load(verify: bool) -> Callable[[], Any]:
            return lambda: load(artifacts.fetch_directory(model_uri, verify=verify))

        def warm(fn: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                os.environ[artifacts.CACHE_DIR_ENV] = str(root / "cache")
                return fn()

            return run

        groups = {
            "table (all columns)": {
                "unchecked": read(False),
                "checked cold": cold(read(True)),
                "checked warm": warm(read(True)),
            },
            f"table ({', '.join(PAIRS_COLUMNS)})": {
                "unchecked": read(False, PAIRS_COLUMNS),
                "checked cold": cold(read(True, PAIRS_COLUMNS)),
                "checked warm": warm(read(True, PAIRS_COLUMNS)),
            },
            f"checkpoint fetch + load ({args.load})": {
                "unchecked": fetch_and_load(False),
                "checked cold": cold(fetch_and_load(True)),
                "checked warm": warm(fetch_and_load(True)),
            },
        }
        results = {name: measure(variants, args.rounds) for name, variants in groups.items()}
        report = {
            "rows": args.rows,
            "table_bytes": table_manifest.total_bytes,
            "table_files": len(table_manifest.files),
            "checkpoint_bytes": model_manifest.total_bytes,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "seconds": results,
            "ratio_to_unchecked": {
                name: {
                    f"{k} {clock}": round(v[clock] / max(times["unchecked"][clock], 1e-9), 3)
                    for k, v in times.items()
                    if k != "unchecked"
                    for clock in ("wall", "cpu")
                }
                for name, times in results.items()
            },
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"judgments table: {args.rows} rows, {report['table_bytes'] / 2**20:.1f} MiB in {report['table_files']} "
        f"file(s); checkpoint: {report['checkpoint_bytes'] / 2**20:.1f} MiB; best of {args.rounds} rounds"
    )
    print(f"{'read':40} {'clock':5} {'unchecked s':>11} {'cold s':>8} {'cold ×':>7} {'warm s':>8} {'warm ×':>7}")
    for name, times in results.items():
        ratio = report["ratio_to_unchecked"][name]
        for clock in ("wall", "cpu"):
            print(
                f"{name:40} {clock:5} {times['unchecked'][clock]:11.3f} {times['checked cold'][clock]:8.3f} "
                f"{ratio[f'checked cold {clock}']:7.3f} {times['checked warm'][clock]:8.3f} "
                f"{ratio[f'checked warm {clock}']:7.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
