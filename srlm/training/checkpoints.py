"""Intermediate checkpoints: every `save_steps` optimizer steps, a full loadable model directory, handed to a hook
(the launcher uploads and registers it as `<id>-step<N>`).

The hook does not delete the local directory. DPO's does (srlm.training.selection wraps the hook: it keeps only
the best-so-far candidate's directory, or none with checkpoint_selection: last); SFT's stay in the job's work
directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from srlm.training.modeling import gathered_state_dict, save_checkpoint

log = logging.getLogger(__name__)

# on_checkpoint(step, directory): called on the main process after each intermediate save; returns the id it
# registered the checkpoint under (recorded by checkpoint selection), or None.
CheckpointHook = Callable[[int, Path], "str | None"]
# select(trainer): after training, the directory of the checkpoint to promote instead of the last step, or None for
# the last step (srlm.training.selection). Called on every rank.
FinalSelection = Callable[[Any], "Path | None"]


def step_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "steps" / f"step-{step:06d}"


def final_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "final"


def export_callback(
    tokenizer: Any, restore_config: dict[str, Any], save_steps: int, on_checkpoint: CheckpointHook | None
) -> Any:
    """A TrainerCallback that exports the model every `save_steps` steps (not at the last step: that one is the
    final checkpoint, saved by the caller). It replaces the Trainer's own saving, whose checkpoint-N directories
    hold trainer state and, for LoRA, only adapters. train_and_save binds it to its trainer (for the accelerator:
    under FSDP every rank takes part in gathering the weights)."""
    from transformers import TrainerCallback

    class ExportCheckpoints(TrainerCallback):
        accelerator: Any = None

        def bind(self, trainer: Any) -> None:
            self.accelerator = trainer.accelerator

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            step = state.global_step
            if step % save_steps or step >= state.max_steps:
                return
            weights = gathered_state_dict(self.accelerator, model) if self.accelerator is not None else None
            if not state.is_world_process_zero:
                return
            unwrapped = self.accelerator.unwrap_model(model) if self.accelerator is not None else model
            directory = save_checkpoint(unwrapped, tokenizer, step_dir(args.output_dir, step), restore_config, weights)
            log.info("intermediate checkpoint at step %d: %s", step, directory)
            if on_checkpoint is not None:
                on_checkpoint(step, directory)

    return ExportCheckpoints()


def train_and_save(
    trainer,
    restore_config: dict,
    output_dir: str | Path,
    resume_from: str | None = None,
    select: FinalSelection | None = None,
) -> Path:
    """Train (continuing from the Trainer checkpoint directory `resume_from` when given), then save the final
    checkpoint and the training log (main process writes); return the directory of the model to promote: the final
    checkpoint, or the one `select` chose (the final one is then not written)."""
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "bind"):
            callback.bind(trainer)
    result = trainer.train(resume_from_checkpoint=resume_from)
    chosen = select(trainer) if select is not None else None
    out = final_dir(output_dir) if chosen is None else chosen
    if chosen is None:
        weights = gathered_state_dict(trainer.accelerator, trainer.model)  # every rank: a collective under FSDP
        if trainer.accelerator.is_main_process:
            model = trainer.accelerator.unwrap_model(trainer.model)
            save_checkpoint(model, trainer.processing_class, out, restore_config, weights)
    if trainer.accelerator.is_main_process:
        summary = {"metrics": result.metrics, "global_step": result.global_step, "log": trainer.state.log_history}
        (Path(output_dir) / "training_log.json").write_text(json.dumps(summary, indent=1, default=str))
        log.info("training done after %d steps; promoting %s", result.global_step, out)
    trainer.accelerator.wait_for_everyone()
    return out
