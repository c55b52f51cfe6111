"""Ray Jobs API client for orchestrated steps: deterministic submission ids, reattach, resubmit, follow, stop.

A task try must never start a second copy of a job that is still running, and must never rerun a job that has
already succeeded. Both follow from naming: the submission id of a task is derived from (dag_id, run_id, task_id,
map_index) and never from the try number, so every try of a task instance finds the same job. When that job
FAILED or was STOPPED, the next try submits under the same id with a `-r<n>` suffix; the chain
`base, base-r1, base-r2, …` is walked to find the newest attempt, which decides what to do.

Airflow-free: srlm_airflow's RayJobsHook wraps this (operators and the triggerer use it through the hook), and
tests drive it against a real local Ray head.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from srlm.errors import SrlmError

log = logging.getLogger(__name__)

# Ray's JobStatus values, as strings so callers need not import Ray.
PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED = "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"
ACTIVE_STATUSES = frozenset({PENDING, RUNNING})
TERMINAL_STATUSES = frozenset({STOPPED, SUCCEEDED, FAILED})
MISSING = "MISSING"  # no job with that submission id exists on the cluster

MAX_RESUBMISSIONS = 100


class RayJobError(SrlmError):
    """A Ray job cannot be submitted, followed, or did not succeed."""


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"


def submission_id(dag_id: str, run_id: str, task_id: str, map_index: int = -1, *, prefix: str = "srlm") -> str:
    """The base submission id of one task instance: readable, deterministic, and the same for every try.

    The readable part is truncated; the digest over the full identity keeps distinct task instances distinct.
    """
    identity = "\x1f".join([dag_id, run_id, task_id, str(map_index)])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"{_slug(prefix, 16)}-{_slug(dag_id, 32)}-{_slug(task_id, 32)}-{digest}"


def resubmission_id(base: str, attempt: int) -> str:
    """Attempt 0 is the base id; attempt n>0 is `<base>-r<n>`."""
    return base if attempt == 0 else f"{base}-r{attempt}"


@dataclass(frozen=True)
class Resolution:
    """What to do for a task instance, decided from the newest job in its submission-id chain."""

    action: str  # "submit" (nothing usable exists), "attach" (a job is running), "done" (a job succeeded)
    submission_id: str
    previous: tuple[tuple[str, str], ...] = ()  # (submission id, status) of every earlier job in the chain


@dataclass
class JobOutcome:
    submission_id: str
    status: str
    message: str = ""
    exit_code: int | None = None  # the entrypoint's exit code, when Ray reports one
    log_chars: int = 0


@dataclass
class JobRequest:
    """Everything `submit` sends besides the submission id. `secret_env` goes into runtime_env.env_vars only."""

    entrypoint: str
    runtime_env: dict[str, Any] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None
    resources: dict[str, float] | None = None

    def merged_runtime_env(self) -> dict[str, Any]:
        env = dict(self.runtime_env or {})
        env_vars = {**dict(env.get("env_vars") or {}), **self.secret_env}
        if env_vars:
            env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
        return env

    def describe(self) -> str:
        """One line for logs: never shows env var values (store credentials travel there)."""
        env = self.merged_runtime_env()
        keys = sorted((env.get("env_vars") or {}).keys())
        other = sorted(k for k in env if k != "env_vars")
        return (
            f"entrypoint={self.entrypoint!r} num_cpus={self.num_cpus} num_gpus={self.num_gpus} "
            f"runtime_env keys={other} env_vars={keys}"
        )


class RayJobs:
    """A thin, typed layer over `ray.job_submission.JobSubmissionClient` (created lazily: importing Ray is slow)."""

    def __init__(
        self,
        address: str,
        *,
        headers: dict[str, str] | None = None,
        verify: bool | str = True,
        client: Any = None,
    ) -> None:
        self.address = address
        self._headers = headers
        self._verify = verify
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            _use_local_auth_token(self._headers)
            try:
                self._client = JobSubmissionClient(self.address, headers=self._headers, verify=self._verify)
            except Exception as exc:
                raise RayJobError(f"cannot reach the Ray Jobs API at {self.address}: {_first_line(exc)}") from exc
        return self._client

    # -- state ------------------------------------------------------------------------------------------------
    def info(self, sid: str) -> Any | None:
        """The JobDetails of `sid`, or None when the cluster has no such job."""
        try:
            return self.client.get_job_info(sid)
        except RuntimeError as exc:
            text = str(exc)
            if "404" in text or "does not exist" in text:
                return None
            raise RayJobError(f"Ray job {sid}: status request failed: {_first_line(exc)}") from exc

    def status(self, sid: str) -> str:
        info = self.info(sid)
        return MISSING if info is None else _status_name(info.status)

    def snapshot(self, sid: str) -> JobOutcome:
        """The job's status, message and exit code now (a job that no longer exists is an error)."""
        info = self.info(sid)
        if info is None:
            raise RayJobError(f"Ray job {sid} disappeared from the cluster at {self.address}")
        return JobOutcome(sid, _status_name(info.status), info.message or "", getattr(info, "driver_exit_code", None))

    def resolve(self, base: str) -> Resolution:
        """Walk `base, base-r1, …` to the first id that does not exist; the newest existing job decides."""
        seen: list[tuple[str, str]] = []
        for attempt in range(MAX_RESUBMISSIONS + 1):
            sid = resubmission_id(base, attempt)
            status = self.status(sid)
            if status == MISSING:
                return Resolution("submit", sid, tuple(seen))
            if status in ACTIVE_STATUSES:
                return Resolution("attach", sid, tuple(seen))
            if status == SUCCEEDED:
                return Resolution("done", sid, tuple(seen))
            seen.append((sid, status))
        raise RayJobError(f"Ray job {base}: gave up after {MAX_RESUBMISSIONS} failed resubmissions")

    # -- actions ----------------------------------------------------------------------------------------------
    def submit(self, sid: str, request: JobRequest) -> str:
        log.info("submitting Ray job %s to %s: %s", sid, self.address, request.describe())
        try:
            return self.client.submit_job(
                entrypoint=request.entrypoint,
                submission_id=sid,
                runtime_env=request.merged_runtime_env() or None,
                metadata={k: str(v) for k, v in request.metadata.items()} or None,
                entrypoint_num_cpus=request.num_cpus,
                entrypoint_num_gpus=request.num_gpus,
                entrypoint_memory=request.memory,
                entrypoint_resources=request.resources,
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):
                # Another try (or a worker that died after submitting) got there first: follow that job.
                log.warning("Ray job %s already exists; attaching to it instead of submitting", sid)
                return sid
            raise RayJobError(f"Ray job {sid}: submission to {self.address} failed: {_first_line(exc)}") from exc

    def ensure(self, base: str, request: JobRequest) -> Resolution:
        """Submit, reattach or stand on a success, so that at most one job of the chain is ever active."""
        resolution = self.resolve(base)
        for sid, status in resolution.previous:
            log.info("Ray job %s ended %s earlier; not reusing it", sid, status)
        if resolution.action == "submit":
            self.submit(resolution.submission_id, request)
        elif resolution.action == "attach":
            log.info("Ray job %s is still running: reattaching instead of submitting again", resolution.submission_id)
        else:
            log.info("Ray job %s already succeeded: not running it again", resolution.submission_id)
        return resolution

    def stop(self, sid: str) -> bool:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL after Ray's grace period). False if it was not running."""
        try:
            stopped = bool(self.client.stop_job(sid))
        except RuntimeError as exc:
            log.warning("could not stop Ray job %s: %s", sid, _first_line(exc))
            return False
        log.info("asked Ray to stop job %s (was running: %s)", sid, stopped)
        return stopped

    def wait(
        self,
        sid: str,
        *,
        emit: Callable[[str], None] | None = None,
        poll_interval: float = 5.0,
        stream: bool = True,
    ) -> JobOutcome:
        """Block until the job is terminal, passing its log lines to `emit` as they appear."""
        follower = _LogFollower(emit)
        if stream and emit is not None:
            try:
                asyncio.run(self._tail(sid, follower))
            except Exception as exc:  # websocket refused or dropped: polling still works
                log.warning("Ray job %s: log streaming stopped (%s); polling instead", sid, _first_line(exc))
        while True:
            outcome = self.snapshot(sid)
            if emit is not None and not follower.streamed_to_end:
                follower.catch_up(self._logs(sid))
            if outcome.status in TERMINAL_STATUSES:
                follower.flush()
                outcome.log_chars = follower.chars
                return outcome
            time.sleep(poll_interval)

    # -- internals --------------------------------------------------------------------------------------------
    async def _tail(self, sid: str, follower: _LogFollower) -> None:
        async for chunk in self.client.tail_job_logs(sid):
            follower.feed(chunk)
        follower.streamed_to_end = True

    def logs(self, sid: str) -> str:
        """The whole log of a job so far ("" when it cannot be fetched)."""
        return self._logs(sid)

    def _logs(self, sid: str) -> str:
        try:
            return self.client.get_job_logs(sid)
        except RuntimeError as exc:
            log.warning("Ray job %s: could not fetch logs: %s", sid, _first_line(exc))
            return ""


def _use_local_auth_token(headers: dict[str, str] | None) -> None:
    """Send this machine's Ray token (RAY_AUTH_TOKEN[_PATH] or ~/.ray/auth_token) when the caller gave none.

    Ray clusters started where such a token exists require it; `ray job submit` enables it the same way.
    """
    if headers and any(key.lower() == "authorization" for key in headers):
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # an older or newer Ray without this helper: the client's own defaults apply
        return
    # The helper announces "token authentication is enabled" at WARNING on every call; that is expected here.
    helper_log = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
    level = helper_log.level
    helper_log.setLevel(logging.ERROR)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        helper_log.setLevel(level)


class _LogFollower:
    """Turns chunks (streamed) or whole-log snapshots (polled) into complete lines, each emitted once."""

    def __init__(self, emit: Callable[[str], None] | None) -> None:
        self._emit = emit
        self._pending = ""
        self.chars = 0  # characters of the job log consumed so far
        self.streamed_to_end = False

    def feed(self, chunk: str) -> None:
        self.chars += len(chunk)
        text = self._pending + chunk
        *lines, self._pending = text.split("\n")
        for line in lines:
            if self._emit is not None:
                self._emit(line)

    def catch_up(self, full_log: str) -> None:
        if len(full_log) > self.chars:
            self.feed(full_log[self.chars :])

    def flush(self) -> None:
        if self._pending and self._emit is not None:
            self._emit(self._pending)
        self._pending = ""


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status))


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # Ray's HTTP errors embed the server's traceback; its last line names the actual problem.
    line = lines[-1] if any("Traceback" in item for item in lines) else lines[0]
    return line.strip()[:500]
