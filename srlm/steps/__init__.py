"""The self-rewarding steps as library functions: URIs in, URI out, idempotent and resumable.

    ctx = StepContext.from_config(load_config("configs/quickstart.yaml"))
    run(ctx)                                   # base → M0 (seed SFT) → M1 … M_K
    iterate(ctx, 2)                            # one iteration: M1 → prompts → candidates → judgments → pairs → M2

Single steps (each also a CLI subcommand): train_seed_model (sft), generate_prompts (prompts),
generate_candidates (generate), judge_candidates (judge), build_pairs (pairs), train_iteration_model (dpo).
Each writes its output where RunLayout says unless told otherwise, prints a one-screen summary and stores it
beside the artifacts, and reuses a committed output made from the same inputs unless forced.

Modules import pyarrow and the store only; torch, transformers and vLLM load inside the backends and the training
process, so importing srlm.steps stays cheap.
"""

from srlm.steps.context import StepContext, StepResult
from srlm.steps.dpo import train_iteration_model
from srlm.steps.generate import generate_candidates
from srlm.steps.iterate import IterationResult, RunResult, iterate, next_iteration, run
from srlm.steps.judge import judge_candidates
from srlm.steps.pairs import build_pairs
from srlm.steps.prompts import generate_prompts
from srlm.steps.sft import train_seed_model

__all__ = [
    "IterationResult",
    "RunResult",
    "StepContext",
    "StepResult",
    "build_pairs",
    "generate_candidates",
    "generate_prompts",
    "iterate",
    "judge_candidates",
    "next_iteration",
    "run",
    "train_iteration_model",
    "train_seed_model",
]
