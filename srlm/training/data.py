"""Training datasets from committed store tables, in TRL's conversational formats.

SFT (sft_examples → prompt-completion): prompt = the example's chat messages, completion = one assistant message,
so TRL computes the loss on completion tokens only. DPO (pairs → preference): prompt = one user message, chosen and
rejected = one assistant message each; the chat template is applied by TRL with the model's own tokenizer.

SFT examples longer than sft.max_length are dropped, not truncated (`fitted_sft_dataset`): TRL keeps the first
max_length tokens of prompt + completion, so a truncated example trains on a target without its end: an EFT
judgment without its final "Score: N" (the one line the judge step parses), an IFT answer broken off mid-sentence
with no end-of-turn token, which teaches the model to run on. The drop is counted per kind (SFTFit).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlm.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

# Where the SFT job writes its SFTFit, next to training_log.json in the job's output directory.
SFT_FIT_FILE = "sft_fit.json"


@dataclass
class SFTExample:
    example_id: str
    kind: str  # "ift" or "eft"
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]

    def as_row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion}


@dataclass
class SFTFit:
    """What fitting the SFT examples into max_length did, per kind ("ift", "eft")."""

    max_length: int
    kept: dict[str, int] = field(default_factory=dict)
    dropped_too_long: dict[str, int] = field(default_factory=dict)  # prompt + completion over max_length
    dropped_examples: list[str] = field(default_factory=list)  # the first few dropped example ids, for the log

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped_too_long.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        total = sum(self.kept.values()) + self.total_dropped
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.dropped_too_long.items()) if n) or "none"
        return f"{self.total_dropped} of {total} examples dropped as longer than max_length {self.max_length} ({kinds})"

    def write(self, output_dir: str | Path) -> Path:
        path = Path(output_dir) / SFT_FIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def read_sft_fit(output_dir: str | Path) -> dict[str, Any] | None:
    """The SFTFit an SFT job wrote to `output_dir` (as a dict), or None when there is none (a DPO job)."""
    path = Path(output_dir) / SFT_FIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def sft_examples(uris: Sequence[str]) -> list[SFTExample]:
    """All rows of the sft_examples tables at `uris` (e.g. IFT and EFT), in order."""
    from srlm.store import read_table

    if not uris:
        raise DataError("SFT needs at least one sft_examples table URI")
    examples = []
    for uri in uris:
        table = read_table(uri, "sft_examples", columns=["example_id", "kind", "prompt_messages", "completion"])
        for row in table.to_pylist():
            if not row["prompt_messages"]:
                raise DataError(f"{uri}: example {row['example_id']}: field prompt_messages is empty")
            examples.append(
                SFTExample(
                    row["example_id"],
                    row["kind"],
                    [{"role": m["role"], "content": m["content"]} for m in row["prompt_messages"]],
                    [{"role": "assistant", "content": row["completion"]}],
                )
            )
    if not examples:
        raise DataError(f"no SFT examples in {', '.join(uris)}")
    return examples


def sft_dataset(uris: Sequence[str]) -> Dataset:
    """All rows of the sft_examples tables at `uris`, in order, as TRL prompt-completion rows (none dropped)."""
    from datasets import Dataset

    return Dataset.from_list([example.as_row() for example in sft_examples(uris)])


def sequence_length(tokenizer: Any, example: SFTExample) -> int:
    """Tokens of prompt + completion as TRL's SFTTrainer tokenizes a conversational prompt-completion row: the
    whole conversation through the tokenizer's chat template."""
    ids = tokenizer.apply_chat_template(example.prompt + example.completion, tokenize=True, return_dict=True)
    return len(ids["input_ids"])


def fit_to_length(examples: Sequence[SFTExample], tokenizer: Any, max_length: int) -> tuple[list[SFTExample], SFTFit]:
    """The examples whose prompt + completion fits in `max_length` tokens (TRL would cut the others' targets), and
    the counts."""
    fit = SFTFit(max_length)
    kept: list[SFTExample] = []
    kept_by_kind: Counter[str] = Counter()
    dropped_by_kind: Counter[str] = Counter()
    for example in examples:
        if sequence_length(tokenizer, example) > max_length:
            dropped_by_kind[example.kind] += 1
            if len(fit.dropped_examples) < 10:
                fit.dropped_examples.append(example.example_id)
        else:
            kept.append(example)
            kept_by_kind[example.kind] += 1
    fit.kept, fit.dropped_too_long = dict(kept_by_kind), dict(dropped_by_kind)
    return kept, fit


def fitted_sft_dataset(uris: Sequence[str], tokenizer: Any, max_length: int) -> tuple[Dataset, SFTFit]:
    """The SFT dataset of `uris` without the examples longer than `max_length` (see the module docstring), and
    what was dropped (also logged)."""
    from datasets import Dataset

    kept, fit = fit_to_length(sft_examples(uris), tokenizer, max_length)
    if fit.total_dropped:
        log.warning(
            "sft: %s: their targets would lose their end (an EFT judgment its final Score line); e.g. %s",
            fit.text(),
            ", ".join(fit.dropped_examples),
        )
    if not kept:
        raise DataError(
            f"no SFT example of {', '.join(uris)} fits sft.max_length {max_length} (prompt + completion tokens); "
            "raise sft.max_length"
        )
    return Dataset.from_list([example.as_row() for example in kept]), fit


# Columns that identify a pair (its row in the pairs table, its prompt): they travel through TRL's tokenization, so
# reference log-probs computed on a (split) dataset can be stored by row; the Trainer drops them before batching.
PAIR_INDEX = "pair_index"
PROMPT_ID = "prompt_id"


def dpo_dataset(uri: str) -> Dataset:
    """The preference pairs of the pairs table at `uri`, in table order, each with its row index (PAIR_INDEX) and
    prompt id."""
    from datasets import Dataset

    from srlm.store import read_table

    table = read_table(uri, "pairs", columns=["prompt_id", "prompt", "chosen", "rejected"])
    if table.num_rows == 0:
        raise DataError(f"{uri}: the pairs table is empty; nothing to train on (were all candidate scores tied?)")
    rows = [
        {
            PAIR_INDEX: index,
            PROMPT_ID: row["prompt_id"],
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
        for index, row in enumerate(table.to_pylist())
    ]
    return Dataset.from_list(rows)
