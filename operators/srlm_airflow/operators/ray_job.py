"""RayJobOperator: run one entrypoint as a Ray job, exactly once per task instance, with its log in the task log.

Retries never duplicate work. The submission id comes from (dag_id, run_id, task_id, map_index), not the try
number, so a retry finds the job of the previous try: still running → it reattaches and follows it; SUCCEEDED → it
is not run again; FAILED or STOPPED → a fresh job is submitted as `<id>-r1`, `-r2`, … (srlm.orchestration.ray_jobs).
On top of that the operator uses Airflow 3.3's ResumableJobMixin, which records the id in the task state store,
so a worker that dies mid-poll reconnects instead of resubmitting.

While the job runs the task is deferred (the default): the worker submits or reattaches, waits up to
`defer_after` seconds (a short job ends there, without the round trip), hands the job to a RayJobTrigger in the
triggerer and frees its slot; `execute_complete` then copies the job's log into the task log and returns its
result. With `deferrable=False` the worker follows the job itself, streaming its log live.

A job whose entrypoint exits with PERMANENT_FAILURE_EXIT_CODE (srlm's config and data errors) fails the task
without spending retries. Killing the task (cleared, marked failed, timed out) stops the Ray job, on the worker
(`on_kill`) or in the triggerer (RayJobTrigger.on_kill, and the trigger's execution_timeout deadline).

Returns a small JSON-safe value: the `srlm-task-result:` line the job printed, or else the submission id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ResumableJobMixin, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout

from srlm.orchestration.ray_jobs import (
    ACTIVE_STATUSES,
    SUCCEEDED,
    TERMINAL_STATUSES,
    JobOutcome,
    JobRequest,
    RayJobs,
    submission_id,
)
from srlm.orchestration.result import MARKER, parse_result
from srlm_airflow.hooks import RayJobsHook
from srlm_airflow.links import RayJobLink
from srlm_airflow.store_credentials import store_environment
from srlm_airflow.triggers import ERROR, PERMANENT_FAILURE, TIMEOUT, RayJobTrigger, event_status, job_event

if TYPE_CHECKING:
    from airflow.sdk import Context

# How long after the trigger's own execution_timeout deadline Airflow fails the deferred task anyway (a backstop for
# a trigger that cannot reach the cluster any more).
TRIGGER_TIMEOUT_GRACE = timedelta(minutes=5)
BRIEF_POLL_S = 0.5  # status polls while a deferrable task waits on its worker before deferring


def default_deferrable() -> bool:
    """`[srlm] deferrable` (AIRFLOW__SRLM__DEFERRABLE; True unless set): the triggerer follows long jobs."""
    return conf.getboolean("srlm", "deferrable", fallback=True)


def default_defer_after() -> float:
    """`[srlm] defer_after` (AIRFLOW__SRLM__DEFER_AFTER; 20 unless set): seconds a deferrable task follows its job
    on the worker before deferring."""
    return conf.getfloat("srlm", "defer_after", fallback=20.0)


class RayJobOperator(ResumableJobMixin, BaseOperator):
    """Submit (or reattach to) a Ray job and wait for it, deferred to the triggerer by default.

    :param entrypoint: shell command the job runs (templated).
    :param runtime_env: Ray runtime_env, e.g. {"pip": [...], "env_vars": {...}} (templated; never put secrets here,
        rendered templates are visible in the UI; store credentials are added from `aws_conn_id` at submit time).
    :param ray_conn_id: `ray` connection of the Jobs API (RayJobsHook); missing → the embedded local Ray head.
    :param aws_conn_id: AWS connection whose credentials/endpoint become AWS_* env vars of the job; missing → the
        worker's own AWS_* environment is forwarded. None: forward nothing.
    :param entrypoint_num_cpus / entrypoint_num_gpus / entrypoint_memory / entrypoint_resources: resources Ray
        reserves for the entrypoint process (templated; strings are converted).
    :param deferrable: wait in the triggerer (default: `[srlm] deferrable`, True) instead of on the worker.
    :param poll_interval: seconds between status polls (the trigger's; the worker's when log streaming fails).
    :param defer_after: deferrable: seconds to follow the job on the worker before deferring (default:
        `[srlm] defer_after`, 20). A job that ends
        within them (most of srlm's CPU steps take a few seconds) returns at once instead of paying the triggerer
        round trip: the trigger's poll, and a second start of the task on a worker to resume it.
    :param stream_logs: when not deferred, follow the job log over the Jobs API websocket (falls back to polling).
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
        ray_conn_id: str | None = RayJobsHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        entrypoint_num_cpus: float | str | None = None,
        entrypoint_num_gpus: float | str | None = None,
        entrypoint_memory: int | str | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        deferrable: bool | None = None,
        poll_interval: float = 2.0,
        defer_after: float | None = None,
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
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.defer_after = default_defer_after() if defer_after is None else defer_after
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

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resumed from the triggerer: the job's log into the task log, then its result (or the failure)."""
        sid = self.last_submission_id = str(event["submission_id"])
        self._jobs = RayJobsHook(self.ray_conn_id, address=event["address"]).get_conn()
        status = event["status"]
        log_text = self._jobs.logs(sid) if status != ERROR else ""
        for line in log_text.splitlines():
            self.log.info("[ray] %s", line)
        if status == ERROR:
            raise AirflowException(f"Ray job {sid}: could not be followed: {event.get('message')}")
        if status == TIMEOUT:
            raise AirflowTaskTimeout(f"Ray job {sid} stopped: the task's execution_timeout {self.execution_timeout} passed")
        self._raise_unless_succeeded(JobOutcome(sid, event["job_status"], event.get("message") or "",
                                                event.get("exit_code")))
        self._result = parse_result(log_text.splitlines())
        return self.get_job_result(sid, context)

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
        if self.deferrable:
            outcome = self._wait_briefly(sid)
            if outcome.status not in TERMINAL_STATUSES:
                self.log.info("Ray job %s is %s at %s: deferring to the triggerer", sid, outcome.status,
                              self.jobs.address)
                self.defer(trigger=self._trigger(sid, context), method_name="execute_complete",
                           timeout=self._trigger_timeout(context))
            # Already over (a short job, or one that ended between tries): no need to go through the triggerer.
            return self.execute_complete(context, job_event(self.jobs.address, outcome, event_status(outcome)))
        self.log.info("following Ray job %s at %s", sid, self.jobs.address)
        lines: list[str] = []

        def emit(line: str) -> None:
            if MARKER in line:
                lines.append(line)
            self.log.info("[ray] %s", line)

        outcome = self.jobs.wait(sid, emit=emit, poll_interval=self.poll_interval, stream=self.stream_logs)
        self._following = None
        self._raise_unless_succeeded(outcome)
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
    def _wait_briefly(self, sid: str) -> JobOutcome:
        """The job's state once it ended or `defer_after` seconds passed, whichever comes first."""
        deadline = time.monotonic() + self.defer_after
        while True:
            outcome = self.jobs.snapshot(sid)
            left = deadline - time.monotonic()
            if outcome.status in TERMINAL_STATUSES or left <= 0:
                return outcome
            time.sleep(min(BRIEF_POLL_S, left))

    @property
    def jobs(self) -> RayJobs:
        if self._jobs is None:
            self._jobs = RayJobsHook(self.ray_conn_id).get_conn()
        return self._jobs

    def _raise_unless_succeeded(self, outcome: JobOutcome) -> None:
        if outcome.status == SUCCEEDED:
            return
        detail = (outcome.message or "").strip().splitlines()
        reason = detail[0] if detail else "no message"
        if event_status(outcome) == PERMANENT_FAILURE:
            raise AirflowFailException(f"Ray job {outcome.submission_id} failed permanently (not retried): {reason}")
        raise AirflowException(f"Ray job {outcome.submission_id} ended {outcome.status}: {reason}")

    def _deadline(self, context: Context) -> datetime | None:
        """When this try's execution_timeout ends (counted from the try's start, as on a worker)."""
        if self.execution_timeout is None:
            return None
        started = getattr(context.get("ti"), "start_date", None) or datetime.now(timezone.utc)
        return started + self.execution_timeout

    def _trigger(self, sid: str, context: Context) -> RayJobTrigger:
        deadline = self._deadline(context)
        return RayJobTrigger(
            submission_id=sid,
            address=self.jobs.address,
            ray_conn_id=self.ray_conn_id,
            poll_interval=self.poll_interval,
            deadline=deadline.isoformat() if deadline else None,
        )

    def _trigger_timeout(self, context: Context) -> timedelta | None:
        deadline = self._deadline(context)
        if deadline is None:
            return None
        return max(deadline - datetime.now(timezone.utc), timedelta(0)) + TRIGGER_TIMEOUT_GRACE

    def _request(self, context: Context) -> JobRequest:
        ti = context["ti"]
        runtime_env = dict(self.runtime_env or {})
        env_vars = {"PYTHONUNBUFFERED": "1", **dict(runtime_env.pop("env_vars", None) or {})}
        runtime_env["env_vars"] = env_vars
        return JobRequest(
            entrypoint=self.build_entrypoint(context),
            runtime_env=runtime_env,
            secret_env=store_environment(self.aws_conn_id),
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
