"""Where each artifact of a run lives in the store. Every step derives its URIs from here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from srlm.store.uri import join_uri


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run. Iteration t (1-based) uses M_{t-1} to build its data and trains M_t; M0 is the seed SFT."""

    root: str
    run: str = "default"

    @property
    def run_uri(self) -> str:
        return join_uri(self.root, "runs", self.run)

    # seed data imported or shipped for this run
    @property
    def seed_ift(self) -> str:
        return join_uri(self.run_uri, "seed", "ift")

    @property
    def seed_eft(self) -> str:
        return join_uri(self.run_uri, "seed", "eft")

    @property
    def eval_groups(self) -> str:
        return join_uri(self.run_uri, "seed", "eval_groups")

    # models and their registry
    def model(self, checkpoint_id: str) -> str:
        return join_uri(self.run_uri, "models", checkpoint_id)

    @property
    def registry(self) -> str:
        return join_uri(self.run_uri, "registry")

    def registry_entry(self, checkpoint_id: str) -> str:
        return join_uri(self.registry, checkpoint_id)

    # one iteration's data
    def iteration(self, t: int) -> str:
        return join_uri(self.run_uri, "iterations", f"{t:03d}")

    def prompts(self, t: int) -> str:
        return join_uri(self.iteration(t), "prompts")

    def candidates(self, t: int) -> str:
        return join_uri(self.iteration(t), "candidates")

    def judgments(self, t: int) -> str:
        return join_uri(self.iteration(t), "judgments")

    def pairs(self, t: int) -> str:
        return join_uri(self.iteration(t), "pairs")

    @staticmethod
    def reference_log_probs(pairs_uri: str) -> str:
        """The DPO reference model's log-probs of a pairs table's rows (srlm.training.reference), stored inside the
        pairs artifact (as shards are), so they go wherever the pairs go and exist for any pairs URI."""
        return join_uri(pairs_uri, "reference_log_probs")

    def summary(self, t: int, step: str) -> str:
        """A step's summary (JSON + text) beside the artifacts; iteration 0 holds the seed SFT's."""
        return join_uri(self.iteration(t), "summaries", step)

    # evaluation
    def eval_result(self, checkpoint_id: str, suite: str, version: str) -> str:
        return join_uri(self.run_uri, "eval", checkpoint_id, suite, version)

    @property
    def report(self) -> str:
        return join_uri(self.run_uri, "report")
