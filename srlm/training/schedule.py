"""The paper's learning-rate schedules: from the peak rate down to a final rate (SFT 5.5e-6 → 1.1e-6 cosine,
DPO 1e-6 → 1e-7 linear), with no warmup.

transformers' min-lr schedules reach their floor one step after training ends; here the first optimizer step uses
exactly the peak rate and the last one exactly the final rate, which is what "decays to X at the end of training"
means and what the tests pin down.
"""

from __future__ import annotations

import functools
import math
import typing
from typing import Any

from srlm.config import Schedule
from srlm.errors import ConfigError

SHAPES = typing.get_args(Schedule)  # the choices live on the config field


def check_schedule(shape: str, learning_rate: float, final_learning_rate: float, section: str) -> None:
    if shape not in SHAPES:
        raise ConfigError(f"{section}.lr_schedule: expected one of {', '.join(SHAPES)}, got {shape!r}")
    if learning_rate <= 0:
        raise ConfigError(f"{section}.learning_rate: must be positive, got {learning_rate}")
    if not 0 <= final_learning_rate <= learning_rate:
        raise ConfigError(
            f"{section}.final_learning_rate: must be between 0 and learning_rate ({learning_rate}), "
            f"got {final_learning_rate}"
        )


def lr_factor(step: int, *, total_steps: int, final_ratio: float, shape: str) -> float:
    """Multiplier of the peak rate for the update with index `step` (0-based) of `total_steps`."""
    progress = min(1.0, step / (total_steps - 1)) if total_steps > 1 else 0.0
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if shape == "cosine" else 1.0 - progress
    return final_ratio + (1.0 - final_ratio) * decay


def peak_to_final_schedule(optimizer: Any, total_steps: int, peak: float, final: float, shape: str) -> Any:
    from torch.optim.lr_scheduler import LambdaLR

    factor = functools.partial(lr_factor, total_steps=total_steps, final_ratio=final / peak, shape=shape)
    return LambdaLR(optimizer, factor)


class PeakToFinalLRMixin:
    """Put before a transformers Trainer subclass in the bases; takes `final_learning_rate` and `lr_schedule`
    keyword arguments and replaces the Trainer's scheduler (the peak rate is args.learning_rate)."""

    def __init__(self, *args: Any, final_learning_rate: float, lr_schedule: str, **kwargs: Any) -> None:
        self._final_learning_rate = final_learning_rate
        self._lr_schedule = lr_schedule
        super().__init__(*args, **kwargs)

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None:
            self.lr_scheduler = peak_to_final_schedule(
                optimizer if optimizer is not None else self.optimizer,
                num_training_steps,
                self.args.learning_rate,
                self._final_learning_rate,
                self._lr_schedule,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler
