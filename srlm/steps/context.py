"""What every step needs besides its inputs: the config, the run's layout, where to print, and provenance."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from srlm.config import SRLMConfig
from srlm.steps.summary import StepSummary
from srlm.store.layout import RunLayout

if TYPE_CHECKING:
    from srlm.steps.backends import BackendPool

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
    ) -> StepContext:
        """Apply the store settings for this process and derive the run's layout."""
        from srlm.store.filesystems import configure_store

        configure_store(config.store)
        return cls(
            config=config,
            layout=RunLayout(config.store.uri, config.run.name),
            echo=echo or _print,
            progress=sys.stderr.isatty() if progress is None else progress,
        )

    def producer(
        self,
        step: str,
        iteration: int,
        params: Any = None,
        inputs: dict[str, Any] | None = None,
        *,
        settings: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Provenance stored in the output's manifest, with the fingerprint that decides when it is stale.

        The fingerprint covers the inputs' fingerprints, the settings (by default the config keys the registry
        lists for `step`, as dotted keys; `settings` adds or replaces some) and the schema version; the full
        config is kept beside it for provenance only. `params`: the settings of a step the registry does not list
        (a registered step's settings are the keys the registry names, whatever the caller passes).
        """
        from srlm.steps.reuse import make_producer, step_settings

        recorded = step_settings(self.config, step)
        if recorded is None:  # not a registered step: the caller's params are its settings
            recorded = _as_dict(params) or {}
        recorded = {**recorded, **dict(settings or {})}
        return make_producer(
            step, inputs or {}, recorded, run=self.layout.run, iteration=iteration, config=self.config.to_dict()
        )

    def save_summary(self, summary: StepSummary) -> None:
        """Print the summary and store it as summary.json + summary.txt beside the artifacts; the stored copy names
        its output relative to the store root (RunLayout.portable), so it stays true when the store moves."""
        import dataclasses

        from srlm.store.artifacts import write_text
        from srlm.store.uri import join_uri

        self.echo(summary.render())
        stored = dataclasses.replace(summary, output_uri=self.layout.portable(summary.output_uri))
        base = self.layout.summary(summary.iteration, summary.step)
        try:
            write_text(join_uri(base, "summary.json"), stored.to_json())
            write_text(join_uri(base, "summary.txt"), stored.render() + "\n")
        except Exception as exc:  # a summary must never fail a step whose output is committed
            log.warning("could not store the %s summary at %s: %s", summary.step, base, exc)


@dataclass
class StepCall:
    """How one step is asked to run, the same from the CLI, `srlm iterate` and an orchestrated task.

    iteration: t (0 for the seed SFT). model: the model to run on, overriding the step's default (None: the
    config's per-step model, else the registered M_{t-1}). inputs: upstream output URIs by name (the registry's
    StepDef.inputs; missing ones come from the run layout). out: the output URI (None: the run layout's).
    options: step-specific settings (evaluate: checkpoint, suites). backends: a generation backend pool shared
    with other steps (`srlm iterate`); None: the step opens its own and closes it when done.
    """

    iteration: int = 0
    model: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    out: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    force: bool = False
    backends: BackendPool | None = None


@dataclass
class StepResult:
    """A step's output URI, its summary, and whether a committed output was reused instead of recomputed.

    outputs: what an orchestrated task publishes besides the URI (e.g. checkpoint_id). reused is None for steps
    that have no single output to reuse (evaluate, checkpoints).
    """

    uri: str
    summary: StepSummary | None = None
    reused: bool | None = False
    outputs: dict[str, Any] = field(default_factory=dict)

    def task_outputs(self) -> dict[str, Any]:
        """The orchestrated task's result: {"uri": …, "reused": …, **outputs}."""
        out: dict[str, Any] = {"uri": self.uri}
        if self.reused is not None:
            out["reused"] = self.reused
        out.update(self.outputs)
        return out


def _as_dict(params: Any) -> dict[str, Any] | None:
    import dataclasses

    if params is None:
        return None
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    if hasattr(params, "model_dump"):
        return params.model_dump()
    return dict(params)
