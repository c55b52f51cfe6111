"""srlm.orchestration (Airflow-free): submission ids and the reattach/resubmit decision, step specs, run plans,
store credentials, result lines and the task entry point; and the DAG-param side of plans, auto-continuation and
AWS connections, which live in the Airflow package (srlm_airflow) and are imported where they are tested."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from srlm.errors import ConfigError
from srlm.orchestration import task
from srlm.orchestration.local_process import LocalStepProcess
from srlm.orchestration.plan import RunPlan
from srlm.orchestration.ray_jobs import JobRequest, RayJobError, RayJobs, _LogFollower, resubmission_id, submission_id
from srlm.orchestration.result import format_result, parse_result
from srlm.orchestration.spec import StepSpec
from srlm.orchestration.store_env import env_from_environment, secret_values

# ------------------------------------------------------------------------------------------- submission ids


def test_submission_id_is_the_same_for_every_try_and_distinct_per_task_instance():
    base = submission_id("srlm_iteration", "manual__2026-03-01T00:00:00+00:00", "generate")
    assert base == submission_id("srlm_iteration", "manual__2026-03-01T00:00:00+00:00", "generate")
    assert base.startswith("srlm-srlm-iteration-generate-")
    others = {
        submission_id("srlm_iteration", "manual__2026-03-02T00:00:00+00:00", "generate"),
        submission_id("srlm_iteration", "manual__2026-03-01T00:00:00+00:00", "judge"),
        submission_id("srlm_iteration", "manual__2026-03-01T00:00:00+00:00", "generate", 3),
        submission_id("srlm_seed", "manual__2026-03-01T00:00:00+00:00", "generate"),
    }
    assert base not in others and len(others) == 4
    long = submission_id("d" * 300, "r" * 300, "t" * 300)
    assert len(long) < 120 and long == submission_id("d" * 300, "r" * 300, "t" * 300)
    assert resubmission_id(base, 0) == base and resubmission_id(base, 2) == f"{base}-r2"


class RecordedJobsAPI:
    """Stands in for JobSubmissionClient with the Jobs API's recorded behaviour (404s, duplicate ids)."""

    def __init__(self, statuses: dict[str, str] | None = None):
        self.statuses = dict(statuses or {})
        self.submitted: list[tuple[str, str]] = []
        self.stopped: list[str] = []

    def get_job_info(self, sid):
        if sid not in self.statuses:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        return SimpleNamespace(status=self.statuses[sid], message="", driver_exit_code=None)

    def submit_job(self, *, entrypoint, submission_id, **kwargs):
        if submission_id in self.statuses:
            raise RuntimeError(
                "Request failed with status code 500: Traceback (most recent call last):\n"
                f"ValueError: Job with submission_id {submission_id} already exists."
            )
        self.statuses[submission_id] = "PENDING"
        self.submitted.append((submission_id, entrypoint))
        return submission_id

    def stop_job(self, sid):
        self.stopped.append(sid)
        return True


@pytest.mark.parametrize(
    ("existing", "action", "chosen"),
    [
        ({}, "submit", "b"),
        ({"b": "RUNNING"}, "attach", "b"),
        ({"b": "PENDING"}, "attach", "b"),
        ({"b": "SUCCEEDED"}, "done", "b"),
        ({"b": "FAILED"}, "submit", "b-r1"),
        ({"b": "STOPPED", "b-r1": "FAILED"}, "submit", "b-r2"),
        ({"b": "FAILED", "b-r1": "RUNNING"}, "attach", "b-r1"),
        ({"b": "FAILED", "b-r1": "SUCCEEDED"}, "done", "b-r1"),
    ],
)
def test_resolution_reattaches_resubmits_or_stands_on_success(existing, action, chosen):
    api = RecordedJobsAPI(existing)
    resolution = RayJobs("http://ray", client=api).ensure("b", JobRequest(entrypoint="python -m x"))
    assert (resolution.action, resolution.submission_id) == (action, chosen)
    assert api.submitted == ([(chosen, "python -m x")] if action == "submit" else [])


def test_a_job_submitted_concurrently_under_the_same_id_is_followed_not_duplicated():
    api = RecordedJobsAPI()
    jobs = RayJobs("http://ray", client=api)
    api.statuses["b"] = "RUNNING"  # another try submitted between our status check and our submit
    assert jobs.submit("b", JobRequest(entrypoint="x")) == "b"
    assert api.submitted == []


def test_status_errors_other_than_not_found_are_raised():
    class Broken(RecordedJobsAPI):
        def get_job_info(self, sid):
            raise RuntimeError("Request failed with status code 503: unavailable")

    with pytest.raises(RayJobError, match="status request failed: Request failed with status code 503"):
        RayJobs("http://ray", client=Broken()).status("b")


def test_job_request_keeps_secrets_out_of_its_description():
    request = JobRequest(
        entrypoint="python -m srlm.orchestration.task pairs",
        runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}, "pip": ["x"]},
        secret_env={"AWS_SECRET_ACCESS_KEY": "s3cr3t-value"},
    )
    assert request.merged_runtime_env() == {
        "env_vars": {"PYTHONUNBUFFERED": "1", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"},
        "pip": ["x"],
    }
    assert "s3cr3t-value" not in request.describe() and "AWS_SECRET_ACCESS_KEY" in request.describe()


def test_log_follower_emits_each_complete_line_once_across_streaming_and_polling():
    lines: list[str] = []
    follower = _LogFollower(lines.append)
    follower.feed("first li")
    follower.feed("ne\nsecond line\nthi")
    follower.catch_up("first line\nsecond line\nthird line\nfourth")  # polling after the stream dropped
    follower.catch_up("first line\nsecond line\nthird line\nfourth")
    follower.flush()
    assert lines == ["first line", "second line", "third line", "fourth"]


# ----------------------------------------------------------------------------------------------- step specs


def test_step_spec_round_trips_through_json_and_builds_the_same_command_everywhere():
    spec = StepSpec(step="generate", config={"store": {"uri": "s3://b/s"}, "run": {"name": "r"}}, iteration=2,
                    model="M1", inputs={"prompts": "s3://b/s/runs/r/iterations/002/prompts"})
    again = StepSpec.from_json(spec.to_json())
    assert again == spec and (again.store_uri, again.run) == ("s3://b/s", "r")
    command = spec.command()
    assert command[:5] == ["python", "-m", "srlm.orchestration.task", "generate", "--spec"]
    assert StepSpec.from_json(command[5]) == spec
    assert spec.shell_command().startswith("python -m srlm.orchestration.task generate --spec '")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"step": "bake", "config": {}}, "unknown step 'bake'"),
        ({"step": "pairs", "config": {}, "iteration": 0}, "step pairs needs iteration >= 1"),
        ({"step": "evaluate", "config": {}}, "needs options.checkpoint"),
        ({"step": "pairs", "config": {}, "iteration": 1, "colour": "red"}, "unknown key(s) colour"),
        ({"config": {}}, "'step' and 'config' are required"),
    ],
)
def test_bad_step_specs_are_refused_with_one_clear_line(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StepSpec.from_dict(data)


def test_invalid_spec_json_names_line_and_column():
    with pytest.raises(ConfigError, match=r"--spec: not valid JSON at line 1 column 2"):
        StepSpec.from_json("{step: 1}")


# ------------------------------------------------------------------------------------------------ run plans


def plan_run(params, *, iteration, model, search=()):
    """A run's plan from DAG params (srlm_airflow.params), over srlm.orchestration.plan.plan_run."""
    from srlm_airflow.params import plan_from_params

    return plan_from_params(params, iteration=iteration, model=model, search=search)


def test_plan_applies_only_given_params_and_makes_local_stores_absolute(tmp_path, monkeypatch):
    config = tmp_path / "small.yaml"
    config.write_text("prompts:\n  num_prompts: 7\ngenerate:\n  num_candidates: 3\n")
    monkeypatch.chdir(tmp_path)
    params = {"config_path": "small.yaml", "store_uri": "relative-store", "run_name": "exp",
              "num_prompts": None, "num_candidates": 5, "beta": 0.25, "backend": "transformers", "force": True}
    plan = plan_run(params, iteration=2, model=None)
    assert plan.config["store"]["uri"] == str(tmp_path / "relative-store")
    assert plan.config["run"]["name"] == "exp"
    assert plan.config["prompts"]["num_prompts"] == 7  # None keeps the config file's value
    assert plan.config["generate"]["num_candidates"] == 5
    assert plan.config["dpo"]["beta"] == 0.25 and plan.config["backend"]["backend"] == "transformers"
    assert RunPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    spec = plan.spec("judge", {"candidates": "c-uri"})
    assert (spec.iteration, spec.force, spec.inputs) == (2, True, {"candidates": "c-uri"})


def test_plan_keeps_s3_stores_and_finds_configs_relative_to_the_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (repo / "configs" / "q.yaml").write_text("run:\n  iterations: 1\n")
    plan = plan_run({"config_path": "configs/q.yaml", "store_uri": "s3://bucket/p"}, iteration=1, model="M0",
                    search=(repo,))
    assert plan.store_uri == "s3://bucket/p" and plan.model == "M0"


def test_plan_errors_name_the_file_or_key():
    with pytest.raises(ConfigError, match="config_path nowhere.yaml: file not found"):
        plan_run({"config_path": "nowhere.yaml"}, iteration=1, model=None)
    with pytest.raises(ConfigError, match="temperature"):
        plan_run({"temperature": "warm"}, iteration=1, model=None)


def published(iteration: int, **params) -> dict:
    return {"run": "exp", "iteration": iteration, "checkpoint_id": f"M{iteration}",
            "checkpoint_uri": f"s3://b/runs/exp/models/M{iteration}", "params": params}


def test_continuation_triggers_the_next_iteration_only_when_asked_and_not_past_the_last():
    from srlm_airflow.params import continuation_conf, continuation_run_id

    assert continuation_conf(published(1, auto_continue=False, last_iteration=3)) is None
    assert continuation_conf(published(3, auto_continue=True, last_iteration=3)) is None
    conf = continuation_conf(published(1, auto_continue=True, last_iteration=3, beta=0.2, run_name="exp"))
    assert conf == {"auto_continue": True, "last_iteration": 3, "beta": 0.2, "run_name": "exp",
                    "iteration": 2, "input_model": "M1"}
    assert continuation_conf(published(0, auto_continue=True, last_iteration=1))["iteration"] == 1
    assert continuation_run_id("exp", 2) == continuation_run_id("exp", 2) == "srlm__exp__iteration_002"


# ------------------------------------------------------------------------------------------ store and results


def test_aws_connection_fields_become_the_s3_environment():
    from srlm_airflow.store_credentials import env_from_aws_connection

    env = env_from_aws_connection(
        "AKIAEXAMPLE", "secret-key", {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1",
                                      "aws_session_token": "tok"}
    )
    assert env == {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                   "AWS_SECRET_ACCESS_KEY": "secret-key", "AWS_SESSION_TOKEN": "tok",
                   "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert set(secret_values(env)) == {"AKIAEXAMPLE", "secret-key", "tok"}
    assert env_from_aws_connection(None, None, {}) == {}
    assert env_from_environment({"AWS_REGION": "us-east-2", "HOME": "/root", "AWS_PROFILE": ""}) == {
        "AWS_REGION": "us-east-2"
    }


def test_result_line_is_found_last_and_garbage_is_ignored():
    lines = ["log", format_result({"uri": "first"}), "srlm-task-result: {not json"]
    lines.append("x " + format_result({"uri": "last"}))
    assert parse_result(lines) == {"uri": "last"}
    assert parse_result(["nothing here"]) is None


def test_local_process_streams_lines_and_returns_the_result_and_exit_code():
    lines: list[str] = []
    code = "import sys; print('working'); print('srlm-task-result: {\"uri\": \"u\"}'); sys.exit(0)"
    outcome = LocalStepProcess([sys.executable, "-c", code]).run(lines.append)
    assert (outcome.returncode, outcome.result) == (0, {"uri": "u"}) and lines[0] == "working"
    failed = LocalStepProcess([sys.executable, "-c", "import sys; sys.exit(3)"]).run(lines.append)
    assert (failed.returncode, failed.result) == (3, None)


# ----------------------------------------------------------------------------------------- task entry point


def test_task_entry_point_exits_3_on_errors_a_retry_cannot_fix(capsys):
    assert task.main(["pairs", "--spec", "{oops"]) == 3
    assert "not retryable" in capsys.readouterr().err
    spec = StepSpec(step="judge", config={}, iteration=1)
    assert task.main(["pairs", "--spec", spec.to_json()]) == 3
    assert "runs step 'pairs' but the spec is for 'judge'" in capsys.readouterr().err


def test_the_parent_watch_has_stopped_when_the_entry_point_returns(tmp_store, tmp_path, capsys):
    # A watcher thread still alive at interpreter shutdown is ended by pthread_exit, which can abort a step that
    # succeeded (exit 134, "terminate called without an active exception"); main must stop it, on success too.
    import threading

    register(tmp_store, "M0", 0, tmp_path)
    plan = plan_run({"store_uri": tmp_store, "run_name": "win"}, iteration=0, model=None)
    for argv, code in ((["checkpoints", "--spec", plan.spec("checkpoints").to_json()], 0), (["pairs", "--spec", "{"], 3)):
        assert task.main(argv, orphan_guard=True) == code
        assert not [t for t in threading.enumerate() if t.name == "srlm-exit-with-parent"]
    capsys.readouterr()


@pytest.mark.parametrize("sigint", ["python", "ignored", "default"])
def test_an_orphaned_step_is_interrupted_and_the_watch_ends_with_it(sigint):
    # "ignored": how a step (or this test run) started in the background by a non-interactive shell finds SIGINT;
    # `_thread.interrupt_main()` alone does nothing then, and the step would run on until grace_s os._exits it
    # (CI's silent pytest death at 61%, when .ci/run was started with `&`).
    previous = signal.signal(
        signal.SIGINT, {"python": signal.default_int_handler, "ignored": signal.SIG_IGN, "default": signal.SIG_DFL}[sigint]
    )
    # Watch our real parent first, then make it "exit": had the watch been built already orphaned, its interrupt
    # could land before `watch` was assigned, nothing would stop it, and after grace_s it would os._exit the test run.
    watch = task.ParentWatch(poll_s=0.05, grace_s=600)
    assert watch._thread is not None, "no watch thread: this test needs a parent other than PID 1"
    try:
        with pytest.raises(KeyboardInterrupt):
            watch._parent = 2**22 + 1  # not our parent: as if it had exited
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # the step's work, until the watcher interrupts it
                time.sleep(0.01)
            pytest.fail("the orphaned step was not interrupted within 20 s")
    finally:
        watch.stop()  # (on a failure too: the watch must not os._exit the test run later)
        signal.signal(signal.SIGINT, previous)
    assert watch.orphaned.is_set()
    assert watch._thread is not None and not watch._thread.is_alive()


def register(store: str, checkpoint: str, iteration: int, tmp_path) -> None:
    from srlm.store import RunLayout, artifacts
    from srlm.training.registry import register_checkpoint

    layout = RunLayout(store, "win")
    directory = tmp_path / checkpoint
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    artifacts.write_directory(layout.model(checkpoint), directory)
    register_checkpoint(layout, checkpoint, iteration, layout.model(checkpoint), None, "sft", 1, True, None, {})


def test_checkpoints_step_lists_those_registered_in_the_window(tmp_store, tmp_path, capsys):
    register(tmp_store, "M0", 0, tmp_path)
    register(tmp_store, "M1", 1, tmp_path)
    plan = plan_run({"store_uri": tmp_store, "run_name": "win"}, iteration=0, model=None)
    now = datetime.now(timezone.utc)

    def listed(start, end):
        options = {"registered_from": start.isoformat(), "registered_to": end.isoformat()}
        return [c["checkpoint_id"] for c in task.run_step(plan.spec("checkpoints", options=options))["checkpoints"]]

    assert listed(now - timedelta(hours=1), now + timedelta(hours=1)) == ["M0", "M1"]
    assert listed(now + timedelta(hours=1), now + timedelta(days=1)) == []
    assert task.main(["checkpoints", "--spec", plan.spec("checkpoints").to_json()]) == 0
    result = parse_result(capsys.readouterr().out.splitlines())
    assert [c["checkpoint_id"] for c in result["checkpoints"]] == ["M0", "M1"]


def test_an_input_model_other_than_the_registered_parent_is_refused_before_any_work(tmp_store, tmp_path, capsys):
    from srlm.store import RunLayout, artifacts

    register(tmp_store, "M0", 0, tmp_path)
    other = RunLayout(tmp_store, "win").model("elsewhere")
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    (directory / "config.json").write_text('{"other": true}')
    artifacts.write_directory(other, directory)
    plan = plan_run({"store_uri": tmp_store, "run_name": "win"}, iteration=1, model=other)
    assert task.main(["prompts", "--spec", plan.spec("prompts").to_json()]) == 3
    assert "is not the registered M0" in capsys.readouterr().err
    assert not artifacts.is_committed(RunLayout(tmp_store, "win").prompts(1))


def test_evaluate_step_calls_the_evaluation_library_and_keeps_its_result_shape(tmp_store, tmp_path, monkeypatch):
    from srlm.store import RunLayout

    def no_cli(argv=None):
        raise AssertionError(f"the evaluate step ran the srlm CLI: {argv}")

    monkeypatch.setattr("srlm.cli.main.main", no_cli)
    register(tmp_store, "M0", 0, tmp_path)
    plan = plan_run({"store_uri": tmp_store, "run_name": "win"}, iteration=0, model=None)
    layout = RunLayout(tmp_store, "win")
    outputs = task.run_step(plan.spec("evaluate", options={"checkpoint": "M0", "suites": ["reward_model"]}))
    assert outputs == {
        "uri": layout.eval_result("M0", "", ""),
        "results": {},
        "skipped": {"reward_model": f"no human-ranked eval groups at {layout.eval_groups} (set seed_data.eval_groups_uri)"},
    }
    with pytest.raises(ConfigError, match="unknown suite.*bogus"):
        task.run_step(plan.spec("evaluate", options={"checkpoint": "M0", "suites": ["bogus"]}))
