"""What one orchestrated step runs with, as JSON that travels unchanged to a Ray job, a pod, or a subprocess.

The spec carries the fully resolved config (loaded and overridden on the Airflow side), so the machine that runs
the step needs neither the YAML file nor the DAG's params: `python -m srlm.orchestration.task STEP --spec JSON`
runs the same thing everywhere. Specs never carry credentials; those travel in the job's environment.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from srlm.errors import ConfigError
from srlm.json_objects import check_fields, load_json_object
from srlm.steps.registry import ITERATION_STEPS, STEP_NAMES

# Steps an orchestrated task can run: every step of the registry (srlm.steps.registry). "sft" is the seed SFT
# (M0); "dpo" is the iteration's training; "checkpoints" lists the run's registered checkpoints (the evaluate DAG
# maps over them).
STEPS = STEP_NAMES
__all__ = ["ITERATION_STEPS", "STEPS", "StepSpec"]


@dataclass(frozen=True)
class StepSpec:
    step: str
    config: dict[str, Any]  # SRLMConfig.to_dict() of the resolved config
    iteration: int = 0  # iteration t (1-based); 0 for the seed SFT and for evaluating M0
    model: str | None = None  # the model the step runs on / trains from (M_{t-1}); None: the step's default
    inputs: dict[str, str] = field(default_factory=dict)  # upstream outputs by name (prompts, candidates, …)
    # Step-specific settings, e.g. evaluate: {"checkpoint": "M1", "suites": [...]};
    # checkpoints: {"registered_from": ISO time, "registered_to": ISO time}.
    options: dict[str, Any] = field(default_factory=dict)
    force: bool = False  # recompute committed outputs

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ConfigError(f"step spec: unknown step {self.step!r}; known steps: {', '.join(STEPS)}")
        if not isinstance(self.iteration, int) or isinstance(self.iteration, bool) or self.iteration < 0:
            raise ConfigError(f"step spec: iteration must be an integer >= 0, got {self.iteration!r}")
        if self.step in ITERATION_STEPS and self.iteration < 1:
            raise ConfigError(f"step spec: step {self.step} needs iteration >= 1, got {self.iteration}")
        if self.step == "evaluate" and not self.options.get("checkpoint"):
            raise ConfigError("step spec: step evaluate needs options.checkpoint (a checkpoint id such as M1)")
        if not isinstance(self.config, dict):
            raise ConfigError(f"step spec: config must be a mapping, got {type(self.config).__name__}")
        if not isinstance(self.options, dict):
            raise ConfigError(f"step spec: options must be a mapping, got {type(self.options).__name__}")

    @property
    def store_uri(self) -> str:
        return str(self.config.get("store", {}).get("uri", ""))

    @property
    def run(self) -> str:
        return str(self.config.get("run", {}).get("name", "default"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "step spec") -> StepSpec:
        check_fields(data, cls, source)
        if "step" not in data or "config" not in data:
            raise ConfigError(f"{source}: 'step' and 'config' are required")
        values = dict(data)
        values["options"] = dict(values.get("options") or {})
        values["inputs"] = {str(k): str(v) for k, v in (values.get("inputs") or {}).items()}
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, source: str = "--spec") -> StepSpec:
        return cls.from_dict(load_json_object(text, source), source)

    def command(self, python: str = "python") -> list[str]:
        """The argv that runs this spec: the same in a Ray job, a Kubernetes pod and a local subprocess."""
        return [python, "-m", "srlm.orchestration.task", self.step, "--spec", self.to_json()]

    def shell_command(self, python: str = "python") -> str:
        """`command` as one shell line (a Ray job entrypoint is a shell command)."""
        return shlex.join(self.command(python))
