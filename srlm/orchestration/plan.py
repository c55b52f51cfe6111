"""Turn a DAG run's params into resolved step specs, and decide what an auto-continued run triggers next.

Airflow-free: the DAGs hand their `params` dict in and get plain JSON back, which is what travels in XCom.
A param left empty (None) keeps the config file's value; every other param overrides one config key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from srlm.errors import ConfigError
from srlm.orchestration.spec import StepSpec

# DAG param -> dotted config key it overrides (None keeps the config's value).
PARAM_OVERRIDES = {
    "store_uri": "store.uri",
    "run_name": "run.name",
    "num_prompts": "prompts.num_prompts",
    "num_candidates": "generate.num_candidates",
    "judge_samples": "judge.num_samples",
    "temperature": "generate.temperature",
    "top_p": "generate.top_p",
    "beta": "dpo.beta",
    "backend": "backend.backend",
}

# Params an auto-continued run inherits unchanged from the run that published the checkpoint.
INHERITED_PARAMS = (
    "store_uri",
    "run_name",
    "config_path",
    "num_prompts",
    "num_candidates",
    "judge_samples",
    "temperature",
    "top_p",
    "beta",
    "backend",
    "auto_continue",
    "last_iteration",
)


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
    def from_dict(cls, data: Mapping[str, Any]) -> "RunPlan":
        return cls(config=dict(data["config"]), iteration=int(data["iteration"]), model=data.get("model"),
                   force=bool(data.get("force", False)))


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


def plan_run(params: Mapping[str, Any], *, iteration: int, model: str | None, search: tuple[Path, ...] = ()) -> RunPlan:
    """Load the config named by the params, apply the param overrides, and make local store paths absolute.

    Absolute store paths matter because a step runs in another process (a Ray job, a pod) with another working
    directory; a relative `srlm-store` would silently point somewhere else there.
    """
    from srlm.config import load_config
    from srlm.store.uri import FILE_SCHEME, is_local, local_path

    overrides = {key: params.get(name) for name, key in PARAM_OVERRIDES.items() if params.get(name) not in (None, "")}
    config = load_config(resolve_config_path(params.get("config_path"), search), overrides)
    if is_local(config.store.uri):
        absolute = local_path(config.store.uri)
        config.store.uri = FILE_SCHEME + absolute if config.store.uri.startswith(FILE_SCHEME) else absolute
    return RunPlan(config=config.to_dict(), iteration=iteration, model=model or None,
                   force=bool(params.get("force", False)))


def previous_checkpoint(iteration: int) -> str:
    """Iteration t trains M_t from M_{t-1} (M0 is the seed SFT model)."""
    return f"M{iteration - 1}"


def continuation_conf(published: Mapping[str, Any]) -> dict[str, Any] | None:
    """The conf of the iteration that follows a published checkpoint, or None when the run should stop there.

    `published` is the asset event extra a publish task wrote: the checkpoint it produced plus the params of the
    run that produced it. Continuing needs auto_continue and an iteration not beyond last_iteration.
    """
    params = dict(published.get("params") or {})
    if not params.get("auto_continue"):
        return None
    next_iteration = int(published["iteration"]) + 1
    last = params.get("last_iteration")
    if last is not None and next_iteration > int(last):
        return None
    conf = {name: params[name] for name in INHERITED_PARAMS if name in params}
    conf["iteration"] = next_iteration
    # The registered id, not the URI: the next iteration's steps then name their data "generated by M_t", and its
    # DPO step finds the same registry entry it trains from.
    conf["input_model"] = published.get("checkpoint_id") or previous_checkpoint(next_iteration)
    return conf


def continuation_run_id(run: str, iteration: int) -> str:
    """One DAG run per (run name, iteration): a second trigger for the same pair is recognised and skipped."""
    return f"srlm__{run}__iteration_{iteration:03d}"
