"""SrlmStepOperator: one srlm step (prompts, generate, judge, …) as a Ray job running the library's task entrypoint.

The job runs `python -m srlm.orchestration.task STEP --spec JSON`, the same command a Kubernetes pod or a local
subprocess runs, and prints its output URIs on a `srlm-task-result:` line; the operator returns the output URI,
so XCom carries URIs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from airflow.sdk.exceptions import AirflowException

from operators.ray_job import RayJobOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from srlm.orchestration.spec import StepSpec


class SrlmStepOperator(RayJobOperator):
    """Run one srlm step of a DAG run's plan as a Ray job.

    :param step: the step name (srlm.orchestration.spec.STEPS).
    :param plan: the run's RunPlan as a dict, usually the XCom of the DAG's `plan` task.
    :param inputs: upstream output URIs by name, usually other step operators' `.output`.
    :param options: step-specific settings (templated), e.g. evaluate: {"checkpoint": "M1", "suites": [...]}.
    :param iteration: override the plan's iteration (templated; the evaluate DAG passes each checkpoint's).
    :param return_key: which field of the job's result the task returns (XCom): "uri" for data steps.
    :param python: interpreter the job runs the entrypoint with (resolved on the Ray node's PATH).
    """

    template_fields: Sequence[str] = (*RayJobOperator.template_fields, "plan", "inputs", "options", "iteration")
    template_fields_renderers = {
        **RayJobOperator.template_fields_renderers,
        "plan": "json",
        "inputs": "json",
        "options": "json",
    }
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

    def build_entrypoint(self, context: Context) -> str:
        return self.step_spec().shell_command(self.python)

    def result_value(self, result: dict[str, Any] | None, submission: str) -> Any:
        if not result or self.return_key not in result:
            raise AirflowException(
                f"{self.step}: job {submission} succeeded but printed no srlm-task-result line "
                f"with {self.return_key!r}"
            )
        return result[self.return_key]
