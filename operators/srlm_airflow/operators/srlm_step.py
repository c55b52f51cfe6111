"""SrlmStepOperator: one srlm step (prompts, generate, judge, …) as a Ray job running the library's task entrypoint.

The job runs `python -m srlm.orchestration.task STEP --spec JSON`, the same command a Kubernetes pod or a local
subprocess runs, and prints its output URIs on a `srlm-task-result:` line; the operator returns the output URI,
so XCom carries URIs only. `SrlmStep` is what every srlm task shares, whatever runs it (Ray, a pod, a process).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

from srlm_airflow.operators.ray_job import RayJobOperator

if TYPE_CHECKING:
    from srlm.orchestration.spec import StepSpec

STEP_TEMPLATE_FIELDS: tuple[str, ...] = ("plan", "inputs", "options", "iteration")
STEP_TEMPLATE_RENDERERS = {"plan": "json", "inputs": "json", "options": "json"}


class SrlmStep:
    """The srlm side of a task: which step of which plan, its inputs and options, and what it returns.

    :param step: the step name (srlm.orchestration.spec.STEPS).
    :param plan: the run's RunPlan as a dict, usually the XCom of the DAG's `plan` task.
    :param inputs: upstream output URIs by name, usually other step operators' `.output`.
    :param options: step-specific settings (templated), e.g. evaluate: {"checkpoint": "M1", "suites": [...]}.
    :param iteration: override the plan's iteration (templated; the evaluate DAG passes each checkpoint's).
    :param return_key: which field of the step's result the task returns (XCom): "uri" for data steps.
    :param python: interpreter the step runs with (resolved on the Ray node's / pod's PATH).
    """

    task_id: str

    def init_step(
        self,
        *,
        step: str,
        plan: Any,
        inputs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
        iteration: int | str | None,
        return_key: str,
        python: str,
    ) -> None:
        self.step = step
        self.plan = plan
        self.inputs = dict(inputs or {})
        self.options = dict(options or {})
        self.iteration = iteration
        self.return_key = return_key
        self.python = python

    def step_spec(self) -> StepSpec:
        from srlm.orchestration.plan import RunPlan

        iteration = None if self.iteration in (None, "") else int(self.iteration)
        return RunPlan.from_dict(self.plan).spec(self.step, self.inputs, options=self.options, iteration=iteration)

    def result_value(self, result: dict[str, Any] | None, submission: str) -> Any:
        if not result or self.return_key not in result:
            raise AirflowException(
                f"{self.step}: {submission} succeeded but printed no srlm-task-result line with {self.return_key!r}"
            )
        return result[self.return_key]


class SrlmStepOperator(SrlmStep, RayJobOperator):
    """Run one srlm step of a DAG run's plan as a Ray job (see SrlmStep for the step parameters)."""

    template_fields: Sequence[str] = (*RayJobOperator.template_fields, *STEP_TEMPLATE_FIELDS)
    template_fields_renderers = {**RayJobOperator.template_fields_renderers, **STEP_TEMPLATE_RENDERERS}
    ui_color = "#c6e5d9"

    def __init__(
        self,
        *,
        step: str,
        plan: Any,
        inputs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        iteration: int | str | None = None,
        return_key: str = "uri",
        python: str = "python",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("metadata", {"srlm_step": step})
        super().__init__(**kwargs)
        self.init_step(step=step, plan=plan, inputs=inputs, options=options, iteration=iteration,
                       return_key=return_key, python=python)

    def build_entrypoint(self, context: Any) -> str:
        return self.step_spec().shell_command(self.python)
