"""Settings that change what an importer keeps (as opposed to where the result is written)."""

from __future__ import annotations

from dataclasses import dataclass

# OASST trees in these states were stopped on purpose (the prompt failed review, or a moderator halted the
# tree), so nothing in them is imported unless tree_states names them explicitly.
OASST_EXCLUDED_TREE_STATES = frozenset({"aborted_low_grade", "halted_by_moderator"})


@dataclass(frozen=True)
class ReadOptions:
    lang: str = "en"  # OASST: language to keep; "all" keeps every language
    include_synthetic: bool = False  # OASST: keep messages marked synthetic
    tree_states: frozenset[str] | None = None  # OASST: keep only trees in these states; None: all but the excluded
    judge_template: str = "additive_5pt"  # jsonl/parquet: the template whose prompts mark EFT examples

    def keeps_lang(self, lang: str | None) -> bool:
        return self.lang == "all" or lang == self.lang

    def keeps_tree_state(self, state: str | None) -> bool:
        if self.tree_states is not None:
            return state in self.tree_states
        return state not in OASST_EXCLUDED_TREE_STATES
