"""What every step needs besides its inputs: the config, the run's layout, where to print, and provenance."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from srlm.config import SRLMConfig
from srlm.store.layout import RunLayout
from srlm.steps.summary import StepSummary

log = logging.getLogger(__name__)


def _print(text: str) -> None:
    print(text, flush=True)


@dataclass
class StepContext:
    config: SRLMConfig
    layout: RunLayout
    echo: Callable[[str], None] = field(default=_print)
    progress: bool = True  # progress bars on long steps

    @classmethod
    def from_config(
        cls, config: SRLMConfig, *, echo: Callable[[str], None] | None = None, progress: bool | None = None
    ) -> "StepContext":
        """Apply the store settings for this process and derive the run's layout."""
        from srlm.store.filesystems import configure_store

        configure_store(config.store)
        return cls(
            config=config,
            layout=RunLayout(config.store.uri, config.run.name),
            echo=echo or _print,
            progress=sys.stderr.isatty() if progress is None else progress,
        )

    def producer(self, step: str, iteration: int, params: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        """Provenance stored in the output's manifest; `inputs` (fingerprints) decide when a committed output is stale."""
        import dataclasses

        return {
            "step": step,
            "run": self.layout.run,
            "iteration": iteration,
            "params": dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params,
            "inputs": inputs,
            "config": self.config.to_dict(),
        }

    def save_summary(self, summary: StepSummary) -> None:
        """Print the summary and store it as summary.json + summary.txt beside the artifacts."""
        from srlm.store.artifacts import write_text
        from srlm.store.uri import join_uri

        text = summary.render()
        self.echo(text)
        base = self.layout.summary(summary.iteration, summary.step)
        try:
            write_text(join_uri(base, "summary.json"), summary.to_json())
            write_text(join_uri(base, "summary.txt"), text + "\n")
        except Exception as exc:  # a summary must never fail a step whose output is committed
            log.warning("could not store the %s summary at %s: %s", summary.step, base, exc)


@dataclass
class StepResult:
    """A step's output URI, its summary, and whether a committed output was reused instead of recomputed."""

    uri: str
    summary: StepSummary
    reused: bool = False
