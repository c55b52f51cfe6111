"""srlm_airflow's operators against a real local Ray head with the Jobs API: RayJobOperator (on the worker and
deferred to the triggerer), SrlmStepOperator and the training operators per backend.

Each test plays the tries of one task instance by hand: a fresh operator object per try (as a retry gets in a new
worker process), the same (dag_id, run_id, task_id), and — where the test says so — the task state store that
Airflow 3.3's ResumableJobMixin keeps between tries. A deferred try is played the same way: execute raises
TaskDeferred, the trigger runs on its own (as in the triggerer), and a fresh operator resumes in execute_complete.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from srlm.orchestration.ray_jobs import ACTIVE_STATUSES, MISSING, RayJobs, resubmission_id, submission_id

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class TaskStateStore:
    """The task_state_store of one task instance (what Airflow persists across its tries)."""

    def __init__(self):
        self.values: dict = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, *, retention=None):
        self.values[key] = value


def make_context(task_id: str, run_id: str, *, store=None, try_number: int = 1, dag_id: str = "srlm_test") -> dict:
    ti = SimpleNamespace(
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1, try_number=try_number, stats_tags={}
    )
    return {"ti": ti, "task_state_store": store}


def python_command(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


@pytest.fixture
def ray_conn(ray_head, monkeypatch) -> str:
    """An Airflow connection (from the environment) pointing at the test head's Jobs API."""
    host, port = ray_head.address.rsplit(":", 1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_TEST", json.dumps({"conn_type": "ray", "host": host.split("//")[1], "port": int(port)})
    )
    return "ray_test"


@pytest.fixture
def run_id() -> str:
    return f"manual__{uuid.uuid4().hex}"


def make_operator(task_id: str, entrypoint: str, ray_conn: str, **kwargs):
    """A RayJobOperator; following the job on the worker unless the test asks for deferral."""
    from srlm_airflow.operators import RayJobOperator

    kwargs.setdefault("deferrable", False)
    return RayJobOperator(
        task_id=task_id, entrypoint=entrypoint, ray_conn_id=ray_conn, aws_conn_id=None, poll_interval=0.2, **kwargs
    )


def execute_in_thread(operator, context):
    """Run operator.execute in a thread (a try in flight); returns (thread, outcome dict)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = operator.execute(context)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever the try ended with
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def wait_until(predicate, what: str, limit: float = 120.0) -> None:
    """Wait for a state the test needs before acting (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def wait_for_file_job(flag: Path, result: dict) -> str:
    """A job that runs until `flag` exists, then prints a result line."""
    return python_command(
        "import json, os, time\n"
        f"while not os.path.exists({str(flag)!r}):\n    time.sleep(0.1)\n"
        f"print('srlm-task-result: ' + json.dumps({result!r}), flush=True)"
    )


def test_job_log_is_streamed_and_its_result_line_returned(ray_conn, run_id, capsys):
    op = make_operator(
        "stream",
        python_command("print('first line'); print('second line'); print('srlm-task-result: {\"uri\": \"s3://b/x\"}')"),
        ray_conn,
    )
    result = op.execute(make_context("stream", run_id, store=TaskStateStore()))
    assert result == {"uri": "s3://b/x"}
    out = capsys.readouterr().out
    assert "[ray] first line" in out and "[ray] second line" in out


def test_retry_reattaches_to_a_running_job_instead_of_submitting_again(ray_conn, run_id, tmp_path):
    flag = tmp_path / "finish"
    entrypoint = wait_for_file_job(flag, {"uri": "done"})
    # Try 1 submitted the job, then its worker died before it could record anything.
    first = make_operator("reattach", entrypoint, ray_conn)
    sid = first.submit_job(make_context("reattach", run_id))
    base = submission_id("srlm_test", run_id, "reattach")
    assert sid == base
    jobs = first.jobs
    wait_until(lambda: jobs.status(sid) == "RUNNING", "the job to run")

    # Try 2 (fresh operator, nothing in the task state store) finds the running job by its derived id.
    second = make_operator("reattach", entrypoint, ray_conn)
    thread, outcome = execute_in_thread(second, make_context("reattach", run_id, store=TaskStateStore(), try_number=2))
    wait_until(lambda: second._following == sid or not thread.is_alive(), "try 2 to follow the job")
    assert second._following == sid
    flag.touch()
    thread.join(120)
    assert outcome == {"value": {"uri": "done"}}
    assert jobs.status(sid) == "SUCCEEDED"
    assert jobs.status(resubmission_id(base, 1)) == MISSING  # no duplicate job


def test_succeeded_job_is_not_run_again(ray_conn, run_id, tmp_path):
    counter = tmp_path / "runs"
    entrypoint = python_command(
        f"open({str(counter)!r}, 'a').write('x'); print('srlm-task-result: {{\"uri\": \"u\"}}')"
    )
    store = TaskStateStore()
    tries = [
        make_context("once", run_id, store=store),
        make_context("once", run_id, store=store, try_number=2),  # the mixin finds SUCCEEDED in the state store
        make_context("once", run_id, try_number=3),  # no state store: the id chain says SUCCEEDED
    ]
    for context in tries:
        assert make_operator("once", entrypoint, ray_conn).execute(context) == {"uri": "u"}
    assert counter.read_text() == "x"


def test_failed_job_is_resubmitted_under_a_suffixed_id(ray_conn, run_id, tmp_path):
    from airflow.sdk.exceptions import AirflowException

    marker = tmp_path / "failed-once"
    entrypoint = python_command(
        "import os, sys\n"
        f"if not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close(); print('transient failure'); sys.exit(1)\n"
        "print('srlm-task-result: {\"uri\": \"second\"}')"
    )
    store = TaskStateStore()
    with pytest.raises(AirflowException, match="ended FAILED"):
        make_operator("flaky", entrypoint, ray_conn).execute(make_context("flaky", run_id, store=store))
    retry = make_context("flaky", run_id, store=store, try_number=2)
    result = make_operator("flaky", entrypoint, ray_conn).execute(retry)
    assert result == {"uri": "second"}
    base = submission_id("srlm_test", run_id, "flaky")
    jobs = RayJobs(make_operator("flaky", entrypoint, ray_conn).jobs.address)
    assert [jobs.status(resubmission_id(base, n)) for n in range(3)] == ["FAILED", "SUCCEEDED", MISSING]
    assert store.get("ray_submission_id") == resubmission_id(base, 1)


def test_permanent_failure_fails_the_task_without_retries(ray_conn, run_id):
    from airflow.sdk.exceptions import AirflowFailException

    op = make_operator("bad-config", python_command("import sys; print('bad config'); sys.exit(3)"), ray_conn)
    with pytest.raises(AirflowFailException, match="failed permanently"):
        op.execute(make_context("bad-config", run_id, store=TaskStateStore()))


def test_on_kill_stops_the_ray_job(ray_conn, run_id, tmp_path):
    from airflow.sdk.exceptions import AirflowException

    op = make_operator("killed", wait_for_file_job(tmp_path / "never", {"uri": "x"}), ray_conn)
    thread, outcome = execute_in_thread(op, make_context("killed", run_id, store=TaskStateStore()))
    wait_until(lambda: op._following is not None or not thread.is_alive(), "the job to be followed")
    sid = op._following
    wait_until(lambda: op.jobs.status(sid) == "RUNNING", "the job to run")
    op.on_kill()
    thread.join(120)
    assert isinstance(outcome.get("error"), AirflowException) and "STOPPED" in str(outcome["error"])
    assert op.jobs.status(sid) == "STOPPED"


def test_store_credentials_reach_the_job_environment_only(ray_conn, run_id, monkeypatch, capsys):
    secret = "srlm-operator-test-secret-5e1f"
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_TEST",
        json.dumps({"conn_type": "aws", "login": "AKIATEST", "password": secret,
                    "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}}),
    )
    code = (
        "import hashlib, json, os\n"
        "seen = {k: os.environ.get(k) for k in ('AWS_ENDPOINT_URL', 'AWS_ACCESS_KEY_ID', 'AWS_REGION')}\n"
        "seen['secret_sha'] = hashlib.sha256(os.environ['AWS_SECRET_ACCESS_KEY'].encode()).hexdigest()\n"
        "print('srlm-task-result: ' + json.dumps(seen))"
    )
    from srlm_airflow.operators import RayJobOperator

    op = RayJobOperator(task_id="creds", entrypoint=python_command(code), ray_conn_id=ray_conn,
                        aws_conn_id="aws_test", poll_interval=0.2, deferrable=False)
    seen = op.execute(make_context("creds", run_id, store=TaskStateStore()))
    assert seen == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_REGION": "eu-west-1",
        "secret_sha": hashlib.sha256(secret.encode()).hexdigest(),
    }
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(op.runtime_env)  # templated fields are shown in the UI
    assert secret not in capsys.readouterr().out


# ------------------------------------------------------------------------------------- srlm steps and training


def registry_plan(store: str) -> dict:
    from srlm.orchestration.plan import plan_run

    return plan_run(overrides={"store.uri": store, "run.name": "ops"}, iteration=0, model=None).to_dict()


def register_fake_checkpoint(store: str, tmp_path: Path) -> str:
    from srlm.store import RunLayout, artifacts
    from srlm.training.registry import register_checkpoint

    layout = RunLayout(store, "ops")
    model_dir = tmp_path / "m0"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    artifacts.write_directory(layout.model("M0"), model_dir)
    register_checkpoint(layout, "M0", 0, layout.model("M0"), None, "sft", 1, True, None, {})
    return layout.registry


@pytest.mark.parametrize(
    ("backend", "backend_kwargs"),
    [("ray", {"training_gpus": "0", "poll_interval": 0.2, "deferrable": False}), ("local", {})],
)
def test_training_operator_runs_the_task_entrypoint_on_ray_and_locally(
    backend, backend_kwargs, ray_conn, run_id, tmp_path
):
    from srlm_airflow.operators import LocalTrainingOperator, RayTrainingOperator, training_operator

    store = str(tmp_path / "store")
    registry = register_fake_checkpoint(store, tmp_path)
    if backend == "ray":
        backend_kwargs["ray_conn_id"] = ray_conn
    op = training_operator(
        backend, task_id=f"list-{backend}", step="checkpoints", plan=registry_plan(store), aws_conn_id=None,
        return_key="checkpoints", **backend_kwargs,
    )
    assert type(op) is {"ray": RayTrainingOperator, "local": LocalTrainingOperator}[backend]
    checkpoints = op.execute(make_context(f"list-{backend}", run_id, store=TaskStateStore()))
    assert [(c["checkpoint_id"], c["iteration"], c["final"]) for c in checkpoints] == [("M0", 0, True)]
    assert registry.endswith("runs/ops/registry")


def test_ray_training_operator_reserves_no_gpus_for_a_ray_train_driver(monkeypatch, tmp_path):
    """backend local: the entrypoint is the trainer and reserves training_gpus; backend ray: it only drives the Ray
    Train job, whose workers reserve the GPUs. Submission itself is SrlmStepOperator's, unchanged."""
    from srlm_airflow.operators import RayTrainingOperator
    from srlm_airflow.operators.srlm_step import SrlmStepOperator

    reserved: dict[str, float | None] = {}
    monkeypatch.setattr(
        SrlmStepOperator, "execute", lambda self, context: reserved.setdefault(self.task_id, self.entrypoint_num_gpus)
    )
    plan = registry_plan(str(tmp_path / "store"))
    for backend in ("local", "ray"):
        plan["config"]["dpo"]["backend"] = backend
        RayTrainingOperator(task_id=f"dpo-{backend}", step="dpo", plan=plan, training_gpus="2").execute({})
    assert reserved == {"dpo-local": 2, "dpo-ray": None}


def test_kubernetes_backend_refuses_a_ray_train_section(tmp_path):
    pytest.importorskip("airflow.providers.cncf.kubernetes.operators.pod")
    from airflow.sdk.exceptions import AirflowFailException

    from srlm_airflow.operators import training_operator

    plan = registry_plan(str(tmp_path / "store"))
    plan["config"]["sft"]["backend"] = "ray"
    operator = training_operator("kubernetes", task_id="sft", step="sft", plan=plan, image="srlm-worker:cuda")
    with pytest.raises(AirflowFailException, match="sft.backend is ray.*runs one pod.*sft.backend: local"):
        operator.configure_pod()


def test_training_operator_refuses_an_unknown_backend():
    from airflow.sdk.exceptions import AirflowFailException

    from srlm_airflow.operators import training_operator

    with pytest.raises(AirflowFailException, match="expected one of ray, kubernetes, local"):
        training_operator("slurm", task_id="t", step="dpo", plan={})


def test_training_backend_comes_from_the_environment_then_the_variable(monkeypatch):
    from srlm_airflow.operators import configured_backend

    monkeypatch.delenv("SRLM_TRAINING_BACKEND", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_SRLM_TRAINING_BACKEND", raising=False)
    assert configured_backend() == "ray"
    monkeypatch.setenv("AIRFLOW_VAR_SRLM_TRAINING_BACKEND", "local")
    assert configured_backend() == "local"
    monkeypatch.setenv("SRLM_TRAINING_BACKEND", "Kubernetes ")
    assert configured_backend() == "kubernetes"  # the environment variable wins, and is normalised


def test_kubernetes_backend_builds_a_gpu_pod_running_the_same_entrypoint(tmp_path):
    pytest.importorskip("airflow.providers.cncf.kubernetes.operators.pod")
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from srlm_airflow.operators import training_operator

    plan = registry_plan(str(tmp_path / "store"))
    plan["iteration"] = 2
    operator = training_operator(
        "kubernetes", task_id="dpo", step="dpo", plan=plan, inputs={"pairs": "s3://b/runs/ops/iterations/002/pairs"},
        training_gpus="2", image="srlm-worker:cuda", namespace="ml", store_secret="srlm-store", aws_conn_id="aws_test",
    )
    assert isinstance(operator, KubernetesPodOperator)  # the pod operator itself, built when the DAG is parsed
    assert operator.do_xcom_push and operator.reattach_on_restart
    assert operator.deferrable  # waits in the triggerer like the Ray operators
    operator.configure_pod()  # what execute does with the rendered fields before the provider builds the pod
    pod = operator.build_pod_request_obj(dry_run=True)
    (container,) = [c for c in pod.spec.containers if c.name == "base"]
    assert pod.metadata.namespace == "ml" and container.image == "srlm-worker:cuda"
    assert container.command[:4] == ["python", "-m", "srlm.orchestration.task", "dpo"]
    spec = json.loads(container.command[container.command.index("--spec") + 1])
    assert spec["iteration"] == 2 and spec["inputs"] == {"pairs": "s3://b/runs/ops/iterations/002/pairs"}
    assert container.resources.limits == {"nvidia.com/gpu": "2"}
    assert container.env_from[0].secret_ref.name == "srlm-store"
    assert {e.name for e in container.env} == {"PYTHONUNBUFFERED"}  # credentials come from the Secret only


# ------------------------------------------------------------------------------- deferral to the triggerer


def run_trigger(trigger) -> dict:
    """Run a trigger to its first event, as the triggerer would (in its own event loop), and return the payload."""
    import asyncio

    async def first_event():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first_event())


def test_long_ray_job_waits_in_the_triggerer_not_in_a_worker_slot(ray_conn, run_id, tmp_path, capsys):
    from airflow.sdk.exceptions import TaskDeferred

    from srlm_airflow.triggers import RayJobTrigger

    flag = tmp_path / "finish"
    entrypoint = python_command(
        "import json, os, time\nprint('working on it', flush=True)\n"
        f"while not os.path.exists({str(flag)!r}):\n    time.sleep(0.1)\n"
        "print('srlm-task-result: ' + json.dumps({'uri': 's3://b/long'}), flush=True)"
    )
    store = TaskStateStore()
    worker = make_operator("long", entrypoint, ray_conn, deferrable=True, defer_after=0)
    with pytest.raises(TaskDeferred) as deferred:
        worker.execute(make_context("long", run_id, store=store))
    # The worker's execute has returned (by deferring) while the job is still running: no slot is held.
    sid = submission_id("srlm_test", run_id, "long")
    assert worker.jobs.status(sid) in ACTIVE_STATUSES
    assert store.get("ray_submission_id") == sid  # the mixin recorded it before deferring
    trigger, method = deferred.value.trigger, deferred.value.method_name
    assert isinstance(trigger, RayJobTrigger) and method == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == "srlm_airflow.triggers.RayJobTrigger"
    assert kwargs["submission_id"] == sid and kwargs["address"] == worker.jobs.address
    assert "headers" not in json.dumps(kwargs)  # connection secrets stay in the connection

    # The triggerer rebuilds the trigger from its serialized form and follows the job until it ends.
    flag.touch()
    event = run_trigger(RayJobTrigger(**kwargs))
    assert (event["status"], event["job_status"], event["submission_id"]) == ("success", "SUCCEEDED", sid)

    # A fresh operator (the resumed try runs in a new worker process) returns the job's result and copies its log.
    resumed = make_operator("long", entrypoint, ray_conn, deferrable=True)
    assert resumed.execute_complete(make_context("long", run_id, store=store), event) == {"uri": "s3://b/long"}
    assert "[ray] working on it" in capsys.readouterr().out
    assert resumed.last_submission_id == sid  # the "Ray job" link points at it
    assert worker.jobs.status(resubmission_id(sid, 1)) == MISSING  # one job, followed once


def test_deferred_job_that_fails_fails_the_try_and_the_retry_resubmits(ray_conn, run_id, tmp_path):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

    from srlm_airflow.triggers import RayJobTrigger

    flag, marker = tmp_path / "finish", tmp_path / "failed-once"
    entrypoint = python_command(
        "import os, sys, time\n"
        f"while not os.path.exists({str(flag)!r}):\n    time.sleep(0.1)\n"
        f"if not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close(); print('transient failure'); sys.exit(1)\n"
        "sys.exit(3)"  # the retry hits a bad config: a failure retries cannot fix
    )
    store = TaskStateStore()
    with pytest.raises(TaskDeferred) as first:
        make_operator("fails", entrypoint, ray_conn, deferrable=True, defer_after=0).execute(
            make_context("fails", run_id, store=store)
        )
    flag.touch()
    event = run_trigger(RayJobTrigger(**first.value.trigger.serialize()[1]))
    assert (event["status"], event["job_status"]) == ("failed", "FAILED")
    with pytest.raises(AirflowException, match="ended FAILED") as failed:
        make_operator("fails", entrypoint, ray_conn).execute_complete(make_context("fails", run_id, store=store), event)
    assert not isinstance(failed.value, AirflowFailException)  # retryable

    retry = make_context("fails", run_id, store=store, try_number=2)
    with pytest.raises(TaskDeferred) as second:  # or the job already ended; either way it is the -r1 job
        make_operator("fails", entrypoint, ray_conn, deferrable=True, defer_after=0).execute(retry)
    base = submission_id("srlm_test", run_id, "fails")
    assert second.value.trigger.submission_id == resubmission_id(base, 1)
    event = run_trigger(second.value.trigger)
    assert (event["status"], event["exit_code"]) == ("permanent_failure", 3)
    with pytest.raises(AirflowFailException, match="failed permanently"):
        make_operator("fails", entrypoint, ray_conn).execute_complete(retry, event)


def test_a_short_job_ends_on_the_worker_without_the_triggerer_round_trip(ray_conn, run_id, capsys):
    entrypoint = python_command("print('quick work', flush=True)\nprint('srlm-task-result: {\"uri\": \"quick\"}')")
    operator = make_operator("quick", entrypoint, ray_conn, deferrable=True, defer_after=120)
    # No TaskDeferred: the job ended within defer_after, so execute returned its result itself.
    assert operator.execute(make_context("quick", run_id)) == {"uri": "quick"}
    assert "[ray] quick work" in capsys.readouterr().out  # its log is in the task log all the same
    assert operator.last_submission_id == submission_id("srlm_test", run_id, "quick")


def test_deferrable_retry_of_a_succeeded_job_returns_without_deferring(ray_conn, run_id):
    entrypoint = python_command("print('srlm-task-result: {\"uri\": \"done\"}')")
    store = TaskStateStore()
    assert make_operator("done", entrypoint, ray_conn).execute(make_context("done", run_id, store=store)) == {
        "uri": "done"
    }
    again = make_operator("done", entrypoint, ray_conn, deferrable=True)
    assert again.execute(make_context("done", run_id, store=store, try_number=2)) == {"uri": "done"}
    assert again.execute(make_context("done", run_id, try_number=3)) == {"uri": "done"}  # found by its id chain
