"""The seed data srlm ships: hand-written IFT examples and the EFT set built from them (see seed/README.md).

The files and their format are srlm.data.seed_files (re-exported here); the EFT builder is srlm.data.eft_builder.
The tables come back in the `sft_examples` schema, the form seed SFT trains on.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from srlm.data.eft_builder import DEFAULT_PER_PROMPT, build_eft
from srlm.data.seed_files import EFT_FILE, IFT_FILE, read_eft_rows, read_ift_rows, seed_path
from srlm.errors import ConfigError
from srlm.store.schemas import schema

SOURCE = "srlm-seed"
EFT_SPLITS = ("train", "eval", "all")


def shipped_ift_rows() -> list[dict[str, Any]]:
    return read_ift_rows(seed_path(IFT_FILE))


def shipped_eft_rows() -> list[dict[str, Any]]:
    return read_eft_rows(seed_path(EFT_FILE))


def _sft_table(rows: list[dict[str, Any]], kind: str) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "example_id": row["id"],
                "kind": kind,
                "prompt_messages": [{"role": "user", "content": row["prompt"]}],
                "completion": row["response"],
                "source": SOURCE,
                "score": float(row["score"]) if kind == "eft" else None,
            }
            for row in rows
        ],
        schema=schema("sft_examples"),
    )


def shipped_ift_table() -> pa.Table:
    """The shipped IFT examples as an `sft_examples` table (kind "ift", score null)."""
    return _sft_table(shipped_ift_rows(), "ift")


def shipped_eft_table(split: str = "train", per_prompt: int | None = None) -> pa.Table:
    """The shipped EFT examples of one split ("train", "eval", or "all") as an `sft_examples` table.

    The eval split holds every EFT example built from about 10% of the IFT prompts, so judge agreement can be
    measured on judgments the model was never trained to give. `per_prompt` (1-6) rebuilds the set with that
    many judged candidates per instruction instead of reading eft.jsonl: a smaller, equally balanced set for
    CPU-sized runs.
    """
    if split not in EFT_SPLITS:
        raise ConfigError(f"EFT split must be one of {', '.join(EFT_SPLITS)}, got {split!r}")
    if per_prompt is None or per_prompt == DEFAULT_PER_PROMPT:
        rows = shipped_eft_rows()
    else:
        rows = build_eft(shipped_ift_rows(), per_prompt=per_prompt)
    if split != "all":
        rows = [row for row in rows if row["split"] == split]
    return _sft_table(rows, "eft")


def seed_prompts() -> list[str]:
    """The shipped IFT instructions, in file order: the seed pool for self-instruct prompt generation."""
    return [row["prompt"] for row in shipped_ift_rows()]
