"""Checkpoint ids: M0 is the seed SFT model, iteration t (1-based) trains M_t from M_{t-1}, and the launcher's
intermediate saves are `M_t-step<N>`.

The one place that writes and reads the pattern; no heavy imports (DAG files use it at parse time). The registry
accepts other ids too (any letters, digits, '.', '_', '-'); these helpers speak only of the M<t> family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"M(?P<iteration>[0-9]+)(?:-step(?P<step>[0-9]+))?")
# A name a user or config may give where a model is expected: M<t> optionally followed by a suffix ('M1-step200').
_REFERENCE = re.compile(r"M[0-9]+(?:-[^/]*)?")


@dataclass(frozen=True)
class ParsedCheckpointId:
    iteration: int
    step: int | None = None  # an intermediate save of that iteration's training


def checkpoint_id(iteration: int, step: int | None = None) -> str:
    """M0 is the seed SFT model; iteration t trains M_t. With `step`, the intermediate save 'M_t-step<N>'."""
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"checkpoint iteration must be an integer >= 0, got {iteration!r}")
    return f"M{iteration}" if step is None else step_checkpoint_id(f"M{iteration}", step)


def step_checkpoint_id(final_id: str, step: int) -> str:
    """The id of an intermediate save of the training that produces `final_id` ('M1', 200 -> 'M1-step200')."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step must be an integer >= 0, got {step!r}")
    return f"{final_id}-step{step}"


def previous_checkpoint_id(iteration: int) -> str:
    """The model iteration t starts from (and uses as DPO reference): M_{t-1}."""
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 1:
        raise ValueError(f"iteration must be an integer >= 1, got {iteration!r}")
    return checkpoint_id(iteration - 1)


def parse_checkpoint_id(text: str) -> ParsedCheckpointId:
    """'M2' -> (2, None), 'M2-step200' -> (2, 200); ValueError naming the text for anything else."""
    match = _PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"checkpoint id {text!r}: expected M<iteration> or M<iteration>-step<N> (e.g. M1, M1-step200)")
    step = match.group("step")
    return ParsedCheckpointId(int(match.group("iteration")), None if step is None else int(step))


def iteration_of(text: str) -> int:
    """The iteration a checkpoint id belongs to ('M3' and 'M3-step200' -> 3)."""
    return parse_checkpoint_id(text).iteration


def looks_like_checkpoint_id(spec: str) -> bool:
    """Whether a model spec names a registered checkpoint (M1, M1-step200) rather than a path, URI or alias."""
    return isinstance(spec, str) and _REFERENCE.fullmatch(spec) is not None
