"""Training steps (seed SFT, DPO): one operator class per backend, chosen when the DAG file is parsed.

- ray (RayTrainingOperator): a Ray job with the reattach / resubmit / stop / deferral behaviour of RayJobOperator.
  With the step's config section on `backend: local` the entrypoint reserves `training_gpus` GPUs (the trainer
  runs in that process); on `backend: ray` it reserves none: it is the driver of a Ray Train job whose workers
  reserve their own (srlm.training.ray_train);
- kubernetes (KubernetesTrainingOperator, srlm_airflow.operators.kubernetes): a KubernetesPodOperator running the
  worker image; needs the cncf.kubernetes provider (the `k8s` extra), imported only when that backend is chosen;
- local (LocalTrainingOperator): a subprocess on the Airflow worker itself (single machine, no Ray).

All three run the same `python -m srlm.orchestration.task STEP --spec JSON` and return the checkpoint URI.

`training_operator(**kwargs)` picks the class. The backend is a deployment setting, read at parse time:
SRLM_TRAINING_BACKEND from the environment (free), else the Airflow Variable `srlm_training_backend` (which Airflow
reads from AIRFLOW_VAR_SRLM_TRAINING_BACKEND — what the Helm chart sets — before the metastore), else "ray".
Changing it takes effect when the DAG files are parsed again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from srlm.orchestration.result import PERMANENT_FAILURE_EXIT_CODE
from srlm_airflow.operators.srlm_step import STEP_TEMPLATE_FIELDS, STEP_TEMPLATE_RENDERERS, SrlmStep, SrlmStepOperator
from srlm_airflow.store_credentials import store_environment

if TYPE_CHECKING:
    from airflow.sdk import Context

BACKENDS = ("ray", "kubernetes", "local")
BACKEND_ENV_VAR = "SRLM_TRAINING_BACKEND"
BACKEND_VARIABLE = "srlm_training_backend"
DEFAULT_BACKEND = "ray"
# Templated defaults: read when the task runs, so they need no DAG re-parse.
TRAINING_GPUS = "{{ var.value.get('srlm_training_gpus', 0) }}"
TRAINING_UI_COLOR = "#f6d6ad"


def configured_backend() -> str:
    """The deployment's training backend (see the module docstring for where it is read from)."""
    value = os.environ.get(BACKEND_ENV_VAR)
    if not value:
        from airflow.sdk import Variable

        value = Variable.get(BACKEND_VARIABLE, default=DEFAULT_BACKEND)
    return str(value or DEFAULT_BACKEND).strip().lower()


def training_operator(backend: str | None = None, **kwargs: Any) -> BaseOperator:
    """The training task for `backend` (default: the deployment's, `configured_backend()`); kwargs go to its class."""
    backend = (backend or configured_backend()).strip().lower()
    if backend == "ray":
        return RayTrainingOperator(**kwargs)
    if backend == "local":
        return LocalTrainingOperator(**kwargs)
    if backend == "kubernetes":
        from srlm_airflow.operators.kubernetes import KubernetesTrainingOperator

        return KubernetesTrainingOperator(**kwargs)
    raise AirflowFailException(
        f"{kwargs.get('task_id', 'training')}: {BACKEND_VARIABLE}={backend!r}; expected one of {', '.join(BACKENDS)}"
    )


def training_backend(plan: Any, step: str) -> str:
    """The training engine (`backend` of the step's config section: local or ray) the plan's `step` runs with."""
    config = plan.get("config", {}) if isinstance(plan, Mapping) else {}
    section = config.get(step) if isinstance(config, Mapping) else None
    return str(section.get("backend", "local")) if isinstance(section, Mapping) else "local"


def gpu_count(value: Any, task_id: str) -> int:
    """`training_gpus` renders as a string ('', '0', '2', '2.0')."""
    try:
        return int(float(value or 0))
    except ValueError as exc:
        raise AirflowFailException(f"{task_id}: training_gpus must be a number, got {value!r}") from exc


class RayTrainingOperator(SrlmStepOperator):
    """A training step as a Ray job whose entrypoint reserves `training_gpus` GPUs (templated; default Variable
    `srlm_training_gpus`, else 0), or none when the step's section runs on Ray Train (`backend: ray`)."""

    template_fields: Sequence[str] = (*SrlmStepOperator.template_fields, "training_gpus")
    ui_color = TRAINING_UI_COLOR

    def __init__(self, *, training_gpus: int | str = TRAINING_GPUS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training_gpus = training_gpus

    def execute(self, context: Context) -> Any:
        if training_backend(self.plan, self.step) == "ray":
            # The entrypoint only drives the Ray Train job; its workers reserve the GPUs (ScalingConfig).
            self.log.info("training step %s as a Ray job driving Ray Train workers (no GPUs for the driver)", self.step)
            self.entrypoint_num_gpus = None
            return super().execute(context)
        gpus = gpu_count(self.training_gpus, self.task_id)
        self.log.info("training step %s as a Ray job with %d GPU(s)", self.step, gpus)
        self.entrypoint_num_gpus = gpus or None
        return super().execute(context)


class LocalTrainingOperator(SrlmStep, BaseOperator):
    """A training step as a subprocess of the Airflow worker (the worker's own interpreter; no Ray, no deferral).

    :param aws_conn_id: AWS connection whose credentials reach the process's environment (None: forward nothing).
    """

    template_fields: Sequence[str] = STEP_TEMPLATE_FIELDS
    template_fields_renderers = STEP_TEMPLATE_RENDERERS
    ui_color = TRAINING_UI_COLOR

    def __init__(
        self,
        *,
        step: str,
        plan: Any,
        inputs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        iteration: int | str | None = None,
        return_key: str = "uri",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.init_step(step=step, plan=plan, inputs=inputs, options=options, iteration=iteration,
                       return_key=return_key, python="")  # the worker's interpreter, at run time
        self.aws_conn_id = aws_conn_id
        self._process: Any = None

    def execute(self, context: Context) -> Any:
        from srlm.orchestration.local_process import LocalStepProcess

        self.log.info("training step %s as a local process", self.step)
        self._process = LocalStepProcess(self.step_spec().command(sys.executable), env=store_environment(self.aws_conn_id))
        outcome = self._process.run(lambda line: self.log.info("[%s] %s", self.step, line))
        self._process = None
        if outcome.returncode == PERMANENT_FAILURE_EXIT_CODE:
            raise AirflowFailException(f"{self.step} failed permanently (exit code {outcome.returncode}); not retried")
        if outcome.returncode != 0:
            raise AirflowException(f"{self.step} exited with code {outcome.returncode}")
        return self.result_value(outcome.result, "local process")

    def on_kill(self) -> None:
        if self._process is not None:
            self.log.info("task killed: stopping the local training process")
            self._process.stop()
