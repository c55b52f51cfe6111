"""Intermediate checkpoints: every `save_steps` optimizer steps, a full loadable model directory, handed to a hook
(the launcher uploads and registers it as `<id>-step<N>`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from srlm.training.modeling import save_checkpoint

log = logging.getLogger(__name__)

# on_checkpoint(step, directory): called on the main process after each intermediate save.
CheckpointHook = Callable[[int, Path], None]


def step_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "steps" / f"step-{step:06d}"


def final_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "final"


def export_callback(
    tokenizer: Any, restore_config: dict[str, Any], save_steps: int, on_checkpoint: CheckpointHook | None
) -> Any:
    """A TrainerCallback that exports the model every `save_steps` steps (not at the last step: that one is the
    final checkpoint, saved by the caller). It replaces the Trainer's own saving, whose checkpoint-N directories
    hold trainer state and, for LoRA, only adapters."""
    from transformers import TrainerCallback

    class ExportCheckpoints(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            step = state.global_step
            if step % save_steps or step >= state.max_steps or not state.is_world_process_zero:
                return
            directory = save_checkpoint(model, tokenizer, step_dir(args.output_dir, step), restore_config)
            log.info("intermediate checkpoint at step %d: %s", step, directory)
            if on_checkpoint is not None:
                on_checkpoint(step, directory)

    return ExportCheckpoints()


def train_and_save(trainer, restore_config: dict, output_dir: str | Path) -> Path:
    """Train, then save the final checkpoint and the training log (main process only)."""
    result = trainer.train()
    out = final_dir(output_dir)
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        save_checkpoint(model, trainer.processing_class, out, restore_config)
        summary = {"metrics": result.metrics, "global_step": result.global_step, "log": trainer.state.log_history}
        (Path(output_dir) / "training_log.json").write_text(json.dumps(summary, indent=1, default=str))
        log.info("final checkpoint after %d steps: %s", result.global_step, out)
    trainer.accelerator.wait_for_everyone()
    return out
