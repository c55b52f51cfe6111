"""RayJobOperator: run one entrypoint as a Ray job, exactly once per task instance, with its log in the task log.

Retries never duplicate work. The submission id comes from (dag_id, run_id, task_id, map_index), not the try
number, so a retry finds the job of the previous try: still running → it reattaches and follows it; SUCCEEDED → it
is not run again; FAILED or STOPPED → a fresh job is submitted as `<id>-r1`, `-r2`, … (srlm.orchestration.ray_jobs).
On top of that the operator uses Airflow 3.3's ResumableJobMixin, which records the id in the task state store,
so a worker that dies mid-poll reconnects instead of resubmitting.

A job whose entrypoint exits with PERMANENT_FAILURE_EXIT_CODE (srlm's config and data errors) fails the task
without spending retries. `on_kill` (task cleared, marked failed, or timed out) stops the Ray job.

Returns a small JSON-safe value: the `srlm-task-result:` line the job printed, or else the submission id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from airflow.sdk import BaseOperator, ResumableJobMixin
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from srlm.orchestration.ray_jobs import (
    ACTIVE_STATUSES,
    SUCCEEDED,
    JobRequest,
    RayJobs,
    submission_id,
)
from operators.links import RayJobLink
from srlm.orchestration.result import MARKER, PERMANENT_FAILURE_EXIT_CODE, parse_result

if TYPE_CHECKING:
    from airflow.sdk import Context


class RayJobOperator(ResumableJobMixin, BaseOperator):
    """Submit (or reattach to) a Ray job and wait for it.

    :param entrypoint: shell command the job runs (templated).
    :param runtime_env: Ray runtime_env, e.g. {"pip": [...], "env_vars": {...}} (templated; never put secrets here,
        rendered templates are visible in the UI; store credentials are added from `aws_conn_id` at submit time).
    :param ray_conn_id: connection holding the Ray Jobs API address; missing → the embedded local Ray head.
    :param aws_conn_id: AWS connection whose credentials/endpoint become AWS_* env vars of the job; missing → the
        worker's own AWS_* environment is forwarded. None: forward nothing.
    :param entrypoint_num_cpus / entrypoint_num_gpus / entrypoint_memory / entrypoint_resources: resources Ray
        reserves for the entrypoint process (templated; strings are converted).
    :param poll_interval: seconds between status polls when log streaming is not available.
    :param stream_logs: follow the job log over the Jobs API websocket (falls back to polling).
    :param submission_prefix: first part of every submission id.
    """

    template_fields: Sequence[str] = (
        "entrypoint",
        "runtime_env",
        "metadata",
        "entrypoint_num_cpus",
        "entrypoint_num_gpus",
        "entrypoint_memory",
    )
    template_fields_renderers = {"runtime_env": "json", "metadata": "json"}
    ui_color = "#d9e8ff"
    external_id_key = "ray_submission_id"
    operator_extra_links = (RayJobLink(),)

    def __init__(
        self,
        *,
        entrypoint: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        ray_conn_id: str | None = "ray_default",
        aws_conn_id: str | None = "aws_default",
        entrypoint_num_cpus: float | str | None = None,
        entrypoint_num_gpus: float | str | None = None,
        entrypoint_memory: int | str | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        poll_interval: float = 5.0,
        stream_logs: bool = True,
        submission_prefix: str = "srlm",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entrypoint = entrypoint
        self.runtime_env = runtime_env or {}
        self.metadata = metadata or {}
        self.ray_conn_id = ray_conn_id
        self.aws_conn_id = aws_conn_id
        self.entrypoint_num_cpus = entrypoint_num_cpus
        self.entrypoint_num_gpus = entrypoint_num_gpus
        self.entrypoint_memory = entrypoint_memory
        self.entrypoint_resources = entrypoint_resources
        self.poll_interval = poll_interval
        self.stream_logs = stream_logs
        self.submission_prefix = submission_prefix
        self._jobs: RayJobs | None = None
        self._following: str | None = None
        self.last_submission_id: str | None = None  # the job this try followed (the "Ray job" link)
        self._result: dict[str, Any] | None = None

    # -- what subclasses change ---------------------------------------------------------------------------------
    def build_entrypoint(self, context: Context) -> str:
        if not self.entrypoint:
            raise AirflowFailException(f"{self.task_id}: no entrypoint given")
        return self.entrypoint

    def result_value(self, result: dict[str, Any] | None, submission: str) -> Any:
        """The task's return value (XCom) from the job's result line; subclasses pick the URI they pass on."""
        return result if result is not None else submission

    # -- Airflow ------------------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        return self.execute_resumable(context)

    def on_kill(self) -> None:
        if self._jobs is not None and self._following is not None:
            self.log.info("task killed: stopping Ray job %s", self._following)
            self._jobs.stop(self._following)

    # -- ResumableJobMixin ------------------------------------------------------------------------------------
    def submit_job(self, context: Context) -> str:
        ti = context["ti"]
        base = submission_id(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, prefix=self.submission_prefix)
        resolution = self.jobs.ensure(base, self._request(context))
        return resolution.submission_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return self.jobs.status(str(external_id))

    def is_job_active(self, status: str) -> bool:
        return status in ACTIVE_STATUSES

    def is_job_succeeded(self, status: str) -> bool:
        return status == SUCCEEDED

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        sid = str(external_id)
        self._following = self.last_submission_id = sid
        self.log.info("following Ray job %s at %s", sid, self.jobs.address)
        lines: list[str] = []

        def emit(line: str) -> None:
            if MARKER in line:
                lines.append(line)
            self.log.info("[ray] %s", line)

        outcome = self.jobs.wait(sid, emit=emit, poll_interval=self.poll_interval, stream=self.stream_logs)
        self._following = None
        if outcome.status != SUCCEEDED:
            detail = (outcome.message or "").strip().splitlines()
            reason = detail[0] if detail else "no message"
            if outcome.exit_code == PERMANENT_FAILURE_EXIT_CODE:
                raise AirflowFailException(f"Ray job {sid} failed permanently (not retried): {reason}")
            raise AirflowException(f"Ray job {sid} ended {outcome.status}: {reason}")
        self._result = parse_result(lines)
        # The mixin returns this method's value when it reattached, so it must be the task's result too.
        return self.get_job_result(sid, context)

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        sid = self.last_submission_id = str(external_id)
        result = self._result
        if result is None:  # a job that had succeeded before this try: its result line is in its log
            result = parse_result(self.jobs.logs(sid).splitlines())
        return self.result_value(result, sid)

    # -- helpers ------------------------------------------------------------------------------------------------
    @property
    def jobs(self) -> RayJobs:
        if self._jobs is None:
            from operators.connections import ray_endpoint

            endpoint = ray_endpoint(self.ray_conn_id)
            self._jobs = RayJobs(endpoint.address, headers=endpoint.headers or None, verify=endpoint.verify)
        return self._jobs

    def _request(self, context: Context) -> JobRequest:
        from operators.connections import store_environment

        ti = context["ti"]
        runtime_env = dict(self.runtime_env or {})
        env_vars = {"PYTHONUNBUFFERED": "1", **dict(runtime_env.pop("env_vars", None) or {})}
        runtime_env["env_vars"] = env_vars
        return JobRequest(
            entrypoint=self.build_entrypoint(context),
            runtime_env=runtime_env,
            secret_env=store_environment(self.aws_conn_id) if self.aws_conn_id is not None else {},
            metadata={
                **{k: str(v) for k, v in (self.metadata or {}).items()},
                "airflow_dag_id": ti.dag_id,
                "airflow_run_id": ti.run_id,
                "airflow_task_id": ti.task_id,
                "airflow_try_number": str(ti.try_number),
            },
            num_cpus=_number(self.entrypoint_num_cpus),
            num_gpus=_number(self.entrypoint_num_gpus),
            memory=int(_number(self.entrypoint_memory)) if _number(self.entrypoint_memory) else None,
            resources=self.entrypoint_resources,
        )


def _number(value: Any) -> float | None:
    """Templated resource fields render as strings; '' and None mean 'let Ray decide'."""
    if value is None or value == "":
        return None
    return float(value)
