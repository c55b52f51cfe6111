"""Training datasets from committed store tables, in TRL's conversational formats.

SFT (sft_examples → prompt-completion): prompt = the example's chat messages, completion = one assistant message,
so TRL computes the loss on completion tokens only. DPO (pairs → preference): prompt = one user message, chosen and
rejected = one assistant message each; the chat template is applied by TRL with the model's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from srlm.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset


def sft_dataset(uris: Sequence[str]) -> Dataset:
    """All rows of the sft_examples tables at `uris` (e.g. IFT and EFT), in order."""
    from datasets import Dataset

    from srlm.store import read_table

    if not uris:
        raise DataError("SFT needs at least one sft_examples table URI")
    rows = []
    for uri in uris:
        table = read_table(uri, "sft_examples", columns=["example_id", "prompt_messages", "completion"])
        for row in table.to_pylist():
            if not row["prompt_messages"]:
                raise DataError(f"{uri}: example {row['example_id']}: field prompt_messages is empty")
            rows.append(
                {
                    "prompt": [{"role": m["role"], "content": m["content"]} for m in row["prompt_messages"]],
                    "completion": [{"role": "assistant", "content": row["completion"]}],
                }
            )
    if not rows:
        raise DataError(f"no SFT examples in {', '.join(uris)}")
    return Dataset.from_list(rows)


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
