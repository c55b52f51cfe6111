"""DPO reference log-probs as their own pass before training, stored with the pairs and reused by a retry.

DPO needs two numbers per pair from the reference model (the paper's M_{t-1}): log π_ref(chosen | prompt) and
log π_ref(rejected | prompt), summed over the response tokens. They never change during training, so they are
computed once, before the first optimizer step, and training then holds no reference model: for full fine-tuning
that is one model's weights less on every device and no reference forward per step. It is exact: the reference
runs in eval mode (no dropout) and on the same tokenization either way.

The pass is TRL's own (`DPOConfig.precompute_ref_log_probs`, in DPOTrainer.__init__). Without a separate reference
model TRL computes them with the policy itself, which before the first step IS M_{t-1}: no second model is loaded
at all. An explicit reference model (`ref_model_path`) is loaded for the pass and freed before training starts.

The values are stored as a `reference_log_probs` table at RunLayout.reference_log_probs(pairs_uri), one row per
pair TRL keeps (it drops pairs whose prompt alone fills max_length), and reused (srlm.steps.reuse) while its
producer matches: the pairs table's manifest, the reference model's files (sha256 of each, so a re-fetched copy of
the same weights matches), the tokenization (max_length, the chat template) and the numerics (the weights' dtype,
bf16 autocast). Rank 0 writes; every rank reads. TRL's own cache (the Hugging Face datasets cache of this machine)
would not survive a retry on another machine.
"""

from __future__ import annotations

import gc
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlm.training.data import PAIR_INDEX, PROMPT_ID

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")  # TRL's names for the precomputed values
PRODUCER_STEP = "dpo_reference"
_HASH_CHUNK = 1 << 24


def model_fingerprint(model_path: str) -> dict[str, Any]:
    """The identity of a model directory: sha256 over its files' names and contents (weights, config, tokenizer).
    A hub id (no local directory) is identified by its name."""
    root = Path(model_path)
    if not root.is_dir():
        return {"name": model_path}
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return {"sha256": digest.hexdigest()}


def reference_producer(pairs_uri: str, reference_path: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The producer (srlm.steps.reuse) of the reference log-probs of `pairs_uri` under the model at
    `reference_path`; `settings`: what else changes the numbers (tokenization, precision)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from srlm.steps.reuse import fingerprint, make_producer

    # Reading the weights once is enough: rank 0 hashes them, the other ranks get its answer.
    state = PartialState()
    model = [model_fingerprint(reference_path) if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(model, from_process=0)
    inputs = {"pairs": fingerprint(pairs_uri), "reference_model": model[0]}
    return make_producer(PRODUCER_STEP, inputs, settings)


def tokenization_settings(cfg: Any, chat_template: str | None, bf16: bool) -> dict[str, Any]:
    """The settings besides the inputs that change the reference log-probs."""
    template = hashlib.sha256((chat_template or "").encode()).hexdigest()
    return {
        "max_length": cfg.max_length,
        "chat_template_sha256": template,
        "weights_dtype": cfg.master_weights,
        "bf16_autocast": bf16,
    }


def stored_reference(uri: str, producer: dict[str, Any]) -> dict[int, tuple[float, float]] | None:
    """{pair_index: (chosen, rejected)} from the table at `uri` if it is committed and was made by `producer`."""
    from srlm.steps.reuse import reuse_committed
    from srlm.store import read_table

    if reuse_committed(uri, producer, force=False, what="dpo reference log-probs", echo=log.info) is None:
        return None
    table = read_table(uri, "reference_log_probs").to_pydict()
    values = zip(table[PAIR_INDEX], table[REFERENCE_COLUMNS[0]], table[REFERENCE_COLUMNS[1]], strict=True)
    log.info("reusing the stored reference log-probs of %d pairs: %s", len(table[PAIR_INDEX]), uri)
    return {index: (chosen, rejected) for index, chosen, rejected in values}


def attach_reference(dataset: Dataset, values: dict[int, tuple[float, float]]) -> Dataset:
    """`dataset` with the stored reference log-probs as TRL's columns. Pairs without a stored value are the ones
    TRL drops in tokenization anyway (the table was made with the same tokenization), so they are left out here."""
    kept = dataset.select([row for row, index in enumerate(dataset[PAIR_INDEX]) if index in values])
    indices = kept[PAIR_INDEX]
    kept = kept.add_column(REFERENCE_COLUMNS[0], [values[i][0] for i in indices])
    return kept.add_column(REFERENCE_COLUMNS[1], [values[i][1] for i in indices])


def store_reference(uri: str, producer: dict[str, Any], datasets: Iterable[Dataset | None]) -> None:
    """Commit the reference log-probs TRL put into `datasets` (the training and held-out splits) as one table."""
    from srlm.store import write_table

    columns = [PAIR_INDEX, PROMPT_ID, *REFERENCE_COLUMNS]
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        if dataset is not None:
            rows.extend(dataset.select_columns(columns).to_list())
    rows.sort(key=lambda row: row[PAIR_INDEX])
    write_table(uri, rows, "reference_log_probs", producer=producer, force=True)
    log.info("stored the reference log-probs of %d pairs: %s", len(rows), uri)


class ReferencePass:
    """DPOTrainer mixin: the reference pass skips a dataset that already carries the stored reference log-probs,
    and runs the model that computes them in eval mode (no dropout: the paper's policy dropout is on in the
    policy's config, and without a separate reference model the policy is that model)."""

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """TRL's pass, with its results added to the dataset in memory on every rank. TRL's own version writes them
        to a datasets cache file on rank 0 that the other ranks then open: a file in a per-process temporary
        directory, which no other worker (let alone another node) can see."""
        import torch
        from torch.utils.data import DataLoader

        if set(REFERENCE_COLUMNS) <= set(dataset.column_names):
            return dataset
        model = self.ref_model or self.model
        training = model.training
        model.eval()
        loader = self.accelerator.prepare(
            DataLoader(
                dataset,
                batch_size=batch_size,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
                shuffle=False,
            )
        )
        chosen, rejected = [], []
        try:
            for batch in loader:
                # Every rank gets every rank's values, in dataset order (shuffle off; the gather drops the padding
                # duplicates an uneven last batch adds).
                values = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(model, batch))
                chosen.append(values[0].float().cpu())
                rejected.append(values[1].float().cpu())
        finally:
            model.train(training)
        log.info("reference log-probs computed for the %s split (%d pairs)", name, len(dataset))
        dataset = dataset.add_column(REFERENCE_COLUMNS[0], torch.cat(chosen).tolist())
        return dataset.add_column(REFERENCE_COLUMNS[1], torch.cat(rejected).tolist())


def free_reference(trainer: Any) -> None:
    """Drop the trainer's reference model (its log-probs are in the datasets now) and return its memory before
    training starts. The caller must hold no other reference to it."""
    model = trainer.ref_model
    if model is None:
        return
    trainer.ref_model = None
    accelerator_models = trainer.accelerator._models  # accelerate keeps every model it prepared
    accelerator_models[:] = [m for m in accelerator_models if m is not model]
    del model
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("reference model freed before training: its log-probs are precomputed")
