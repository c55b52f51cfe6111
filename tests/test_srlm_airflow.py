"""The srlm_airflow package without a Ray cluster: it installs as an Airflow provider with the `ray` connection type,
RayJobsHook reads its connection, and RayJobTrigger round-trips and fires the right event for each way a job ends
(against a fake Jobs API client)."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from srlm.orchestration.ray_jobs import JobOutcome, RayJobError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ----------------------------------------------------------------------------------------- provider and hook


def test_the_package_is_installed_and_registered_as_an_airflow_provider(tmp_path):
    """From outside the repository: the installed srlm_airflow, found by Airflow's ProvidersManager."""
    script = (
        "import json, srlm_airflow\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "pm = ProvidersManager()\n"
        "hook = pm.hooks['ray']\n"
        "print('PROVIDER ' + json.dumps({'file': srlm_airflow.__file__, 'hook': hook.hook_class_name,\n"
        "    'conn_attr': hook.connection_id_attribute_name, 'hook_name': hook.hook_name,\n"
        "    'package': hook.package_name, 'links': pm.extra_links_class_names,\n"
        "    'triggers': [t.trigger_class_name for t in pm.trigger],\n"
        "    'form': pm.field_behaviours.get('ray')}))\n"
    )
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROVIDER ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    info = json.loads(lines[-1][len("PROVIDER "):])
    assert info["file"].endswith("operators/srlm_airflow/__init__.py")
    assert (info["hook"], info["conn_attr"], info["hook_name"], info["package"]) == (
        "srlm_airflow.hooks.RayJobsHook", "ray_conn_id", "Ray Jobs API", "srlm"
    )
    assert "srlm_airflow.links.RayJobLink" in info["links"]
    assert "srlm_airflow.triggers" in info["triggers"]
    assert set(info["form"]["hidden_fields"]) == {"login", "password"}
    assert info["form"]["relabeling"]["host"] == "Ray dashboard host"


def test_hook_reads_host_port_scheme_and_extra_of_a_ray_connection(monkeypatch):
    from srlm_airflow.hooks import RayJobsHook

    assert (RayJobsHook.conn_type, RayJobsHook.default_conn_name, RayJobsHook.conn_name_attr) == (
        "ray", "ray_default", "ray_conn_id"
    )
    monkeypatch.setenv("AIRFLOW_CONN_RAY_TLS", json.dumps({
        "conn_type": "ray", "host": "head.ray.svc", "port": 443, "schema": "https",
        "extra": {"headers": {"Authorization": "Bearer t0ken"}, "verify": "/etc/ca.pem"},
    }))
    endpoint = RayJobsHook("ray_tls").get_endpoint()
    assert (endpoint.address, endpoint.headers, endpoint.verify) == (
        "https://head.ray.svc:443", {"Authorization": "Bearer t0ken"}, "/etc/ca.pem"
    )
    monkeypatch.setenv("AIRFLOW_CONN_RAY_PLAIN", json.dumps({"conn_type": "ray", "host": "10.0.0.5"}))
    assert RayJobsHook("ray_plain").get_endpoint().address == "http://10.0.0.5:8265"  # the Jobs API's port
    monkeypatch.setenv("AIRFLOW_CONN_RAY_ADDR", json.dumps({"conn_type": "ray", "extra": {"address": "http://x:1"}}))
    jobs = RayJobsHook("ray_addr").get_conn()
    assert jobs.address == "http://x:1"
    # A pinned address (the trigger's) keeps the connection's headers but not its address.
    pinned = RayJobsHook("ray_tls", address="https://other:8265").get_endpoint()
    assert (pinned.address, pinned.headers) == ("https://other:8265", {"Authorization": "Bearer t0ken"})
    monkeypatch.setenv("AIRFLOW_CONN_RAY_EMPTY", json.dumps({"conn_type": "ray"}))
    with pytest.raises(ValueError, match="'ray_empty' has neither a host nor extra.address"):
        RayJobsHook("ray_empty").get_endpoint()


def test_without_a_connection_the_hook_uses_the_environment(monkeypatch):
    from srlm_airflow.hooks import RayJobsHook

    monkeypatch.delenv("RAY_JOBS_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "ray://not-the-jobs-api:10001")  # a Ray client address: not usable here
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://api:8265")
    endpoint = RayJobsHook("no_such_connection").get_endpoint()
    assert (endpoint.address, endpoint.embedded) == ("http://api:8265", False)


# ------------------------------------------------------------------------------------------------ trigger


class FakeJobs:
    """The RayJobs calls the trigger makes, answering from a script of statuses."""

    address = "http://fake:8265"

    def __init__(self, *outcomes: JobOutcome | Exception) -> None:
        self.outcomes = list(outcomes)
        self.stopped: list[str] = []

    def snapshot(self, sid: str) -> JobOutcome:
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def stop(self, sid: str) -> bool:
        self.stopped.append(sid)
        return True


def fired(trigger) -> list[dict]:
    async def collect():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def make_trigger(jobs: FakeJobs, **kwargs):
    from srlm_airflow.triggers import RayJobTrigger

    trigger = RayJobTrigger(submission_id="sid", address=jobs.address, poll_interval=0, **kwargs)
    trigger._jobs = jobs
    return trigger


def test_trigger_serializes_to_the_arguments_that_rebuild_it():
    from srlm_airflow.triggers import RayJobTrigger

    trigger = RayJobTrigger(submission_id="srlm-x-1", address="http://h:8265", ray_conn_id="ray_default",
                            poll_interval=2.5, deadline="2026-03-01T00:00:00+00:00")
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert classpath == "srlm_airflow.triggers.RayJobTrigger"


@pytest.mark.parametrize(
    ("final", "status"),
    [
        (JobOutcome("sid", "SUCCEEDED"), "success"),
        (JobOutcome("sid", "FAILED", "exit 1", 1), "failed"),
        (JobOutcome("sid", "STOPPED", "stopped by a user"), "failed"),
        (JobOutcome("sid", "FAILED", "bad config", 3), "permanent_failure"),
    ],
)
def test_trigger_waits_while_the_job_runs_and_fires_once_when_it_ends(final, status):
    jobs = FakeJobs(JobOutcome("sid", "PENDING"), JobOutcome("sid", "RUNNING"), JobOutcome("sid", "RUNNING"), final)
    (event,) = fired(make_trigger(jobs))
    assert event == {"status": status, "submission_id": "sid", "address": jobs.address,
                     "job_status": final.status, "message": final.message, "exit_code": final.exit_code}
    assert jobs.outcomes == [final] and jobs.stopped == []  # it polled through every running state


def test_trigger_stops_the_job_when_the_execution_timeout_passes():
    jobs = FakeJobs(JobOutcome("sid", "RUNNING"))
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    (event,) = fired(make_trigger(jobs, deadline=past))
    assert (event["status"], event["job_status"]) == ("timeout", "RUNNING") and jobs.stopped == ["sid"]


def test_trigger_reports_a_job_it_cannot_follow_and_on_kill_stops_the_job():
    jobs = FakeJobs(JobOutcome("sid", "RUNNING"), RayJobError("Ray job sid disappeared from the cluster"))
    (event,) = fired(make_trigger(jobs))
    assert event["status"] == "error" and "disappeared" in event["message"]
    killed = FakeJobs(JobOutcome("sid", "RUNNING"))
    asyncio.run(make_trigger(killed).on_kill())
    assert killed.stopped == ["sid"]


def test_operator_failure_events_map_to_retryable_permanent_and_timeout_errors(monkeypatch):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout

    from srlm_airflow.operators import RayJobOperator
    from srlm_airflow.triggers import job_event

    op = RayJobOperator(task_id="t", entrypoint="true", execution_timeout=timedelta(hours=1))
    fake = FakeJobs(JobOutcome("sid", "RUNNING"))
    fake.logs = lambda sid: "line one\n"
    cases = [
        (job_event(fake.address, JobOutcome("sid", "FAILED", "boom", 1)), AirflowException, "ended FAILED: boom"),
        (job_event(fake.address, JobOutcome("sid", "FAILED", "bad", 3)), AirflowFailException, "failed permanently"),
        (job_event(fake.address, JobOutcome("sid", "RUNNING"), "timeout"), AirflowTaskTimeout, "execution_timeout"),
        (job_event(fake.address, JobOutcome("sid", "UNKNOWN", "gone"), "error"), AirflowException, "could not be"),
    ]
    monkeypatch.setattr(
        "srlm_airflow.operators.ray_job.RayJobsHook", lambda conn_id, address=None: SimpleNamespace(get_conn=lambda: fake)
    )
    for event, error, message in cases:
        with pytest.raises(error, match=message):
            op.execute_complete({}, event)
