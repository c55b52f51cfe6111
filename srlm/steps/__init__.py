"""The self-rewarding steps as library functions: URIs in, URI out, idempotent and resumable.

    from srlm.steps.iterate import iterate, run

    ctx = StepContext.from_config(load_config("configs/quickstart.yaml"))
    run(ctx)                                   # base → M0 (seed SFT) → M1 … M_K
    iterate(ctx, 2)                            # one iteration: M1 → prompts → candidates → judgments → pairs → M2

The steps are declared once in srlm.steps.registry (name, runner, inputs, output, timeout, the config that
affects them); the single steps are train_seed_model (sft), generate_prompts (prompts), generate_candidates
(generate), judge_candidates (judge), build_pairs (pairs) and train_iteration_model (dpo). Each writes its output
where RunLayout says unless told otherwise, prints a one-screen summary and stores it beside the artifacts, and
reuses a committed output only while its producer fingerprint matches (srlm.steps.reuse).

Names are imported on first use, so `import srlm.steps.registry` (DAG files, at parse time) loads neither pyarrow
nor the store; torch, transformers and vLLM load only inside the backends and the training process.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IterationResult": "srlm.steps.iterate",
    "RunResult": "srlm.steps.iterate",
    "StepCall": "srlm.steps.context",
    "StepContext": "srlm.steps.context",
    "StepResult": "srlm.steps.context",
    "build_pairs": "srlm.steps.pairs",
    "generate_candidates": "srlm.steps.generate",
    "generate_prompts": "srlm.steps.prompts",
    "judge_candidates": "srlm.steps.judge",
    "next_iteration": "srlm.steps.iterate",
    "run": "srlm.steps.iterate",
    "train_iteration_model": "srlm.steps.dpo",
    "train_seed_model": "srlm.steps.sft",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'srlm.steps' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
