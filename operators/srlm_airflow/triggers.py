"""RayJobTrigger: follow a Ray job from the triggerer, so a long job holds no worker slot while it runs.

The operator submits (or reattaches to) the job on a worker, then defers; this trigger polls the Jobs API status
without blocking the triggerer's event loop (the Ray client is synchronous, so each call runs in a thread) and
fires one event when the job ends, when the task's execution_timeout passes (it stops the job first, as the worker
would on a timeout), or when the job cannot be followed. The operator's `execute_complete` then fetches the job's
log into the task log and reads its `srlm-task-result:` line. A user clearing or failing the deferred task stops
the job (`on_kill`); a triggerer restart does not (the trigger is only moved).

Event payload: {"status": "success" | "failed" | "permanent_failure" | "timeout" | "error", "submission_id",
"address", "job_status", "message", "exit_code"}.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from srlm.orchestration.ray_jobs import SUCCEEDED, TERMINAL_STATUSES, JobOutcome, RayJobError
from srlm.orchestration.result import PERMANENT_FAILURE_EXIT_CODE

SUCCESS, FAILED, PERMANENT_FAILURE, TIMEOUT, ERROR = "success", "failed", "permanent_failure", "timeout", "error"


def event_status(outcome: JobOutcome) -> str:
    """What a terminal job means for the task: success, a retryable failure, or a failure retries cannot fix."""
    if outcome.status == SUCCEEDED:
        return SUCCESS
    return PERMANENT_FAILURE if outcome.exit_code == PERMANENT_FAILURE_EXIT_CODE else FAILED


def job_event(address: str, outcome: JobOutcome, status: str | None = None) -> dict[str, Any]:
    return {
        "status": status or event_status(outcome),
        "submission_id": outcome.submission_id,
        "address": address,
        "job_status": outcome.status,
        "message": outcome.message,
        "exit_code": outcome.exit_code,
    }


class RayJobTrigger(BaseTrigger):
    """Wait in the triggerer until a Ray job is terminal.

    :param submission_id: the job to follow.
    :param address: the Jobs API the job was submitted to.
    :param ray_conn_id: its connection (for headers / TLS verification only; the address is pinned).
    :param poll_interval: seconds between status requests.
    :param deadline: ISO time after which the job is stopped and a "timeout" event fires (the task's
        execution_timeout); None: no deadline.
    """

    def __init__(
        self,
        *,
        submission_id: str,
        address: str,
        ray_conn_id: str | None = None,
        poll_interval: float = 2.0,
        deadline: str | None = None,
    ) -> None:
        super().__init__()
        self.submission_id = submission_id
        self.address = address
        self.ray_conn_id = ray_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self._jobs: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "submission_id": self.submission_id,
                "address": self.address,
                "ray_conn_id": self.ray_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    def jobs(self):
        """The Jobs API client (blocking: call it in a thread); the connection lookup happens on first use."""
        if self._jobs is None:
            from srlm_airflow.hooks import RayJobsHook

            self._jobs = RayJobsHook(self.ray_conn_id, address=self.address).get_conn()
        return self._jobs

    def _past_deadline(self) -> bool:
        return self.deadline is not None and datetime.now(timezone.utc) >= datetime.fromisoformat(self.deadline)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sid = self.submission_id
        try:
            jobs = await asyncio.to_thread(self.jobs)
            while True:
                outcome = await asyncio.to_thread(jobs.snapshot, sid)
                if outcome.status in TERMINAL_STATUSES:
                    yield TriggerEvent(job_event(self.address, outcome))
                    return
                if self._past_deadline():
                    self.log.info("Ray job %s: execution_timeout passed; stopping it", sid)
                    await asyncio.to_thread(jobs.stop, sid)
                    yield TriggerEvent(job_event(self.address, outcome, TIMEOUT))
                    return
                self.log.debug("Ray job %s is %s; next check in %.1fs", sid, outcome.status, self.poll_interval)
                await asyncio.sleep(self.poll_interval)
        except RayJobError as exc:
            yield TriggerEvent(job_event(self.address, JobOutcome(sid, "UNKNOWN", str(exc)), ERROR))

    async def on_kill(self) -> None:
        """The user cleared, failed or succeeded the deferred task: stop the job, as the worker's on_kill would."""
        self.log.info("task killed while deferred: stopping Ray job %s", self.submission_id)
        jobs = await asyncio.to_thread(self.jobs)
        await asyncio.to_thread(jobs.stop, self.submission_id)
