"""A run's resolved config (RunPlan): what every orchestrated step of one run runs with.

Airflow-free: the orchestrator (srlm_airflow maps a DAG run's params to dotted overrides) hands a config path and
overrides in and gets plain JSON back, which is what travels in XCom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srlm.errors import ConfigError
from srlm.orchestration.spec import StepSpec


@dataclass(frozen=True)
class RunPlan:
    """The resolved config of one DAG run and what its steps run on; `to_dict` is the XCom payload."""

    config: dict[str, Any]
    iteration: int
    model: str | None
    force: bool

    @property
    def run(self) -> str:
        return self.config["run"]["name"]

    @property
    def store_uri(self) -> str:
        return self.config["store"]["uri"]

    def spec(
        self,
        step: str,
        inputs: Mapping[str, str] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        iteration: int | None = None,
        model: str | None = None,
    ) -> StepSpec:
        return StepSpec(
            step=step,
            config=self.config,
            iteration=self.iteration if iteration is None else iteration,
            model=self.model if model is None else model,
            inputs={k: str(v) for k, v in (inputs or {}).items()},
            options=dict(options or {}),
            force=self.force,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "iteration": self.iteration, "model": self.model, "force": self.force}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunPlan:
        return cls(
            config=dict(data["config"]),
            iteration=int(data["iteration"]),
            model=data.get("model"),
            force=bool(data.get("force", False)),
        )


def resolve_config_path(path: str | None, search: tuple[Path, ...] = ()) -> Path | None:
    """An absolute config path: as given if it exists, else relative to each of `search` (e.g. the repo root)."""
    if not path:
        return None
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    for base in search:
        if (base / candidate).exists():
            return (base / candidate).resolve()
    places = ", ".join(["the working directory", *map(str, search)])
    raise ConfigError(f"config_path {path}: file not found (looked in {places})")


def plan_run(
    config_path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    iteration: int,
    model: str | None,
    force: bool = False,
    search: tuple[Path, ...] = (),
) -> RunPlan:
    """Load the config file, apply dotted overrides (validating the whole config), refuse a run that cannot fit the
    config's cluster budget (srlm.planning.resources; no budget, no check), canonicalise the store URI.

    Absolute store paths matter because a step runs in another process (a Ray job, a pod) with another working
    directory; a relative `srlm-store` would silently point somewhere else there. The canonical spelling
    (srlm.store.uri.canonical_store_uri, which RunLayout uses too) is one for './x', 'x/' and '/abs/x'.
    """
    from srlm.config import load_config
    from srlm.planning.resources import refuse_unfit_plan
    from srlm.store.uri import canonical_store_uri

    config = load_config(resolve_config_path(config_path, search), dict(overrides or {}))
    refuse_unfit_plan(config)
    config.store.uri = canonical_store_uri(config.store.uri)
    return RunPlan(config=config.to_dict(), iteration=iteration, model=model or None, force=force)
