"""Checkpoint selection, the paper's early stopping: which DPO checkpoint becomes M_t.

With `dpo.checkpoint_selection: best` a validation split is held out from the pairs (seeded by dpo.seed; not trained
on) whenever training will produce more than one candidate, i.e. more optimizer steps than dpo.save_steps. Every
save_steps checkpoint and the last step are candidates, each scored on the held-out pairs by TRL's own evaluation
(DPOTrainer with an eval_dataset, evaluated at the save steps: `eval_rewards/accuracies`, the share of pairs whose
implicit reward β·log(π/π_ref) prefers the chosen response, and `eval_loss`, the DPO loss). The Trainer evaluates
right after the step's export, before any further optimizer step, and the last step after training, so each score
is that checkpoint's weights'; evaluation runs in eval mode (no dropout). The held-out size is rounded up to whole
evaluation batches across the processes, so TRL's per-batch averages equal per-pair shares.

The rule (select): the highest held-out reward accuracy; ties (equal within 1e-9) go to the lower held-out loss,
then to the earlier step, which has moved less from M_{t-1} (early stopping prefers stopping sooner). With
selection_metric loss: the lowest loss, ties to the higher reward accuracy, then the earlier step.

`checkpoint_selection: last` promotes the last step and holds nothing out (the behaviour before selection). Either
way <output_dir>/selection.json records the rule, the metric, the held-out count and why, every candidate's scores
(checkpoint_id: the id the checkpoint hook registered it under; null for the last step, which becomes M_t itself
when chosen) and the selected step. Local candidate directories are deleted once uploaded, except the best so far.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlm.training.checkpoints import CheckpointHook, step_dir
from srlm.training.common import batch_arithmetic
from srlm.training.data import PAIR_INDEX

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"
# TRL's evaluation metric per selection metric.
EVAL_METRICS = {"reward_accuracy": "eval_rewards/accuracies", "loss": "eval_loss"}
_TIE = 1e-9


@dataclass(frozen=True)
class ValidationPlan:
    """Which rows of the pairs table are held out for scoring checkpoints, and why (or why none are)."""

    validation: tuple[int, ...]
    reason: str
    eval_batch_size: int = 1  # per device

    @property
    def held_out(self) -> bool:
        return bool(self.validation)

    def split(self, dataset: Dataset) -> tuple[Dataset, Dataset | None]:
        """(training pairs, held-out pairs or None), by the rows' PAIR_INDEX."""
        if not self.held_out:
            return dataset, None
        held = set(self.validation)
        rows = dataset[PAIR_INDEX]
        train = dataset.select([i for i, index in enumerate(rows) if index not in held])
        return train, dataset.select([i for i, index in enumerate(rows) if index in held])


def optimizer_steps(train_pairs: int, cfg: Any, processes: int, max_steps: int | None) -> int:
    """The optimizer steps the Trainer will take over `train_pairs` pairs (its own arithmetic: batches per process,
    accumulation, epochs rounded up)."""
    if max_steps is not None and max_steps > 0:
        return max_steps
    per_device, accumulation = batch_arithmetic(cfg.batch_size, cfg.per_device_batch_size, processes, "dpo")
    batches = math.ceil(train_pairs / (per_device * processes))
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return math.ceil(cfg.num_train_epochs * per_epoch)


def validation_plan(pairs: int, cfg: Any, processes: int, max_steps: int | None = None) -> ValidationPlan:
    """The held-out split of `pairs` pairs under the dpo section `cfg` for a job of `processes` processes."""
    per_device, _ = batch_arithmetic(cfg.batch_size, cfg.per_device_batch_size, processes, "dpo")
    if cfg.checkpoint_selection != "best":
        return ValidationPlan((), "checkpoint_selection is last: the last step becomes M_t", per_device)
    wanted = max(math.ceil(cfg.validation_fraction * pairs), cfg.min_validation_pairs)
    whole_batches = per_device * processes
    held = math.ceil(wanted / whole_batches) * whole_batches
    if held > pairs // 2:
        return ValidationPlan(
            (),
            f"too few pairs ({pairs}) to hold out {held} and train on the rest; the last step becomes M_t",
            per_device,
        )
    steps = optimizer_steps(pairs - held, cfg, processes, max_steps)
    if steps <= cfg.save_steps:
        return ValidationPlan(
            (),
            f"training takes {steps} optimizer step(s), not more than save_steps {cfg.save_steps}: one candidate, "
            "nothing to select; the last step becomes M_t",
            per_device,
        )
    rows = sorted(random.Random(cfg.seed).sample(range(pairs), held))
    return ValidationPlan(tuple(rows), f"{held} of {pairs} pairs held out (seed {cfg.seed})", per_device)


@dataclass(frozen=True)
class Candidate:
    step: int
    checkpoint_id: str | None  # None: the last step (it becomes M_t itself when chosen)
    reward_accuracy: float
    loss: float


def select(candidates: list[Candidate], metric: str) -> Candidate:
    """The candidate that becomes M_t under `metric` (the rule in the module docstring)."""
    if not candidates:
        raise ValueError("checkpoint selection: no scored candidates")
    if metric not in EVAL_METRICS:
        raise ValueError(f"dpo.selection_metric: expected one of {', '.join(EVAL_METRICS)}, got {metric!r}")
    best = candidates[0]
    for candidate in candidates[1:]:
        if _better(candidate, best, metric):
            best = candidate
    return best


def _better(a: Candidate, b: Candidate, metric: str) -> bool:
    """Whether `a` beats `b` (ties in both scores go to the earlier step)."""
    # Each criterion as "higher is better": accuracy, then minus loss (swapped for selection by loss).
    criteria = [(a.reward_accuracy, b.reward_accuracy), (-a.loss, -b.loss)]
    if metric == "loss":
        criteria.reverse()
    for x, y in criteria:
        if not math.isclose(x, y, rel_tol=0.0, abs_tol=_TIE):
            return x > y
    return a.step < b.step


class CheckpointSelection:
    """Scores the candidates of one DPO run as the Trainer evaluates them, keeps only the best-so-far local
    directory once the checkpoint hook has taken it, and after training picks M_t (train_and_save's `select`)."""

    def __init__(self, cfg: Any, plan: ValidationPlan, output_dir: str | Path, on_checkpoint: CheckpointHook | None):
        self.cfg = cfg
        self.plan = plan
        self.output_dir = Path(output_dir)
        self.on_checkpoint = on_checkpoint
        self.checkpoint_ids: dict[int, str | None] = {}
        self.best: Candidate | None = None
        self.last_step: int | None = None

    @property
    def scoring(self) -> bool:
        return self.plan.held_out

    def eval_arguments(self) -> dict[str, Any]:
        """TrainingArguments fields for scoring: TRL's evaluation at every save step (and nothing when not
        scoring). Loss-only prediction: DPOTrainer's metrics come from the loss pass; logits would cost a forward."""
        if not self.scoring:
            return {}
        return dict(
            eval_strategy="steps",
            eval_steps=self.cfg.save_steps,
            per_device_eval_batch_size=self.plan.eval_batch_size,
            prediction_loss_only=True,
        )

    def hook(self, step: int, directory: Path) -> str | None:
        """The checkpoint hook the trainer calls: the caller's (upload + register), then local clean-up."""
        checkpoint_id = self.on_checkpoint(step, directory) if self.on_checkpoint is not None else None
        self.checkpoint_ids[step] = checkpoint_id if isinstance(checkpoint_id, str) else None
        if self.on_checkpoint is not None and not self.scoring:
            shutil.rmtree(directory, ignore_errors=True)  # uploaded, and never promoted: the last step is M_t
        return checkpoint_id

    def callback(self) -> Any:
        """A TrainerCallback that records each evaluation as the candidate of the step it ran at."""
        from transformers import TrainerCallback

        selection = self

        class ScoreCheckpoints(TrainerCallback):
            def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
                if metrics and state.is_world_process_zero:
                    selection._scored(selection._candidate(state.global_step, state.max_steps, metrics))

        return ScoreCheckpoints()

    def _candidate(self, step: int, max_steps: int, metrics: dict[str, Any]) -> Candidate:
        self.last_step = max_steps
        checkpoint_id = None if step >= max_steps else self.checkpoint_ids.get(step)
        return Candidate(
            step, checkpoint_id, float(metrics[EVAL_METRICS["reward_accuracy"]]), float(metrics[EVAL_METRICS["loss"]])
        )

    def _scored(self, candidate: Candidate) -> None:
        log.info(
            "checkpoint at step %d: held-out reward accuracy %.4f, loss %.4f",
            candidate.step, candidate.reward_accuracy, candidate.loss,
        )  # fmt: skip
        if self.best is None or _better(candidate, self.best, self.cfg.selection_metric):
            previous, self.best = self.best, candidate
            if previous is not None:
                self._discard(previous)
        else:
            self._discard(candidate)

    def _discard(self, candidate: Candidate) -> None:
        """Delete a candidate's local directory when it is uploaded (the last step has none yet)."""
        if self.on_checkpoint is not None and candidate.step != self.last_step:
            shutil.rmtree(step_dir(self.output_dir, candidate.step), ignore_errors=True)

    def __call__(self, trainer: Any) -> Path | None:
        """After training, on every rank: score the last step if the Trainer did not, pick M_t, write
        selection.json. Returns the chosen intermediate checkpoint's directory, or None for the last step."""
        last = trainer.state.global_step
        self.last_step = last
        if not self.scoring:
            self._write(trainer, [], last)
            return None
        candidates = self.candidates(trainer.state.log_history)
        if last not in {c.step for c in candidates}:
            trainer.evaluate()  # on_evaluate records it
            candidates = self.candidates(trainer.state.log_history)
        chosen = select(candidates, self.cfg.selection_metric)
        self._write(trainer, candidates, chosen.step)
        if chosen.step == last:
            return None
        directory = step_dir(self.output_dir, chosen.step)
        if trainer.accelerator.is_main_process and not directory.is_dir():
            # A job restarted on another machine lost its earlier local candidates; the chosen one is registered.
            log.warning("selected step %d has no local directory (%s); it is registered as %s", chosen.step,
                        directory, chosen.checkpoint_id)  # fmt: skip
        return directory

    def candidates(self, log_history: list[dict[str, Any]]) -> list[Candidate]:
        """The scored candidates in step order, from the Trainer's log (which a resumed job restores), each step's
        latest evaluation."""
        by_step: dict[int, Candidate] = {}
        for entry in log_history:
            if EVAL_METRICS["loss"] in entry and EVAL_METRICS["reward_accuracy"] in entry:
                step = int(entry["step"])
                by_step[step] = self._candidate(step, self.last_step or step, entry)
        return [by_step[step] for step in sorted(by_step)]

    def _write(self, trainer: Any, candidates: list[Candidate], selected_step: int) -> None:
        if not trainer.accelerator.is_main_process:
            return
        record = selection_record(self.cfg, self.plan, candidates, selected_step)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / SELECTION_FILE).write_text(json.dumps(record, indent=1))
        if candidates:
            log.info("checkpoint selection (%s): step %d becomes M_t", self.cfg.selection_metric, selected_step)


def selection_record(cfg: Any, plan: ValidationPlan, candidates: list[Candidate], selected_step: int) -> dict:
    """What selection.json holds (the registry record's details and the dpo step summary show it)."""
    return {
        "rule": cfg.checkpoint_selection,
        "metric": cfg.selection_metric,
        "validation_pairs": len(plan.validation),
        "reason": plan.reason,
        "candidates": [asdict(candidate) for candidate in candidates],
        "selected_step": selected_step,
    }


def read_selection(output_dir: str | Path) -> dict[str, Any] | None:
    """The selection record a DPO run wrote into `output_dir`, if any."""
    path = Path(output_dir) / SELECTION_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
