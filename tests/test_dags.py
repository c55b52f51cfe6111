"""The DAG files: they import cleanly and cheaply, refuse bad params with a clear message, and wire retries,
pools, timeouts, the models asset and the evaluation timetable as intended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS = REPO_ROOT / "dags"
DAG_IDS = {"srlm_iteration", "srlm_seed", "srlm_evaluate", "srlm_continue"}
# Parse-time imports must stay light: no ML stack, no store, no step implementations (the stdlib-only step
# registry is read for the task timeouts).
HEAVY_MODULES = ("torch", "transformers", "vllm", "ray", "pyarrow", "kubernetes", "srlm.store", "srlm.training",
                 "srlm.evaluation")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Run in a clean interpreter whose working directory is elsewhere and whose sys.path lacks the repository: the DAG
# files must find srlm_airflow as an installed package, never through sys.path edits.
PARSE_SCRIPT = f"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
repo_on_path = [p for p in sys.path if p and Path(p).resolve() == Path({str(REPO_ROOT)!r})]
bag = BundleDagBag(dag_folder={str(DAGS)!r}, bundle_path=Path({str(DAGS)!r}), bundle_name="dags-folder")
heavy = sorted(m for m in sys.modules if m.startswith({HEAVY_MODULES!r}))
heavy += sorted(m for m in sys.modules if m.startswith("srlm.steps.") and m != "srlm.steps.registry")
classes = {{f"{{d.dag_id}}.{{t.task_id}}": type(t).__name__ for d in bag.dags.values() for t in d.tasks}}
print("PARSED " + json.dumps({{"dags": sorted(bag.dags), "errors": bag.import_errors, "heavy": heavy,
                              "classes": classes, "repo_on_path": repo_on_path,
                              "path_changed": [p for p in sys.path if p not in START_PATH]}}))
"""


def parse_dags_elsewhere(tmp_path: Path, **env_vars: str) -> dict:
    """Parse dags/ in a fresh interpreter: fresh AIRFLOW_HOME, cwd outside the repository, no PYTHONPATH."""
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SRLM_TRAINING_BACKEND")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **env_vars})
    script = "import sys\nSTART_PATH = list(sys.path)\n" + PARSE_SCRIPT
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PARSED ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("PARSED "):])


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS, bundle_name="dags-folder")
    assert not bag.import_errors
    return bag


def test_dag_files_import_without_sys_path_edits_errors_or_heavy_modules(tmp_path):
    parsed = parse_dags_elsewhere(tmp_path)
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == DAG_IDS
    assert parsed["repo_on_path"] == []  # srlm_airflow came from the installed package
    # Airflow itself puts the DAGs folder (and the config/plugins folders) on sys.path; nothing of ours adds more.
    assert [p for p in parsed["path_changed"] if Path(p).resolve() not in (DAGS,) and "airflow-home" not in p] == []
    assert parsed["heavy"] == []  # parsing must stay fast: no torch/ray/pyarrow/srlm steps at import time
    assert parsed["classes"]["srlm_iteration.dpo"] == "RayTrainingOperator"  # the default training backend
    assert parsed["classes"]["srlm_seed.sft"] == "RayTrainingOperator"


def test_dag_file_imports_are_already_in_sorted_order():
    """An import sorter leaves the DAG files as they are (and the parse test shows they work in that order)."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment (make setup installs it)")
    done = subprocess.run([str(ruff), "check", "--select", "I", "--diff", str(DAGS)], capture_output=True, text=True,
                          cwd=str(REPO_ROOT), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (DAGS / "srlm_dag_defaults.py").exists() and not (DAGS / ".airflowignore").exists()


@pytest.mark.parametrize(
    ("env_vars", "expected"),
    [
        ({"SRLM_TRAINING_BACKEND": "local"}, "LocalTrainingOperator"),
        ({"AIRFLOW_VAR_SRLM_TRAINING_BACKEND": "kubernetes"}, "KubernetesTrainingOperator"),
    ],
    ids=["env-local", "variable-kubernetes"],
)
def test_training_backend_picks_the_operator_class_when_the_dag_is_parsed(tmp_path, env_vars, expected):
    parsed = parse_dags_elsewhere(tmp_path, **env_vars)
    assert parsed["errors"] == {}
    assert parsed["classes"]["srlm_iteration.dpo"] == expected and parsed["classes"]["srlm_seed.sft"] == expected
    assert parsed["classes"]["srlm_iteration.generate"] == "SrlmStepOperator"  # only training follows the backend


def test_unknown_training_backend_is_an_import_error_naming_it(tmp_path):
    parsed = parse_dags_elsewhere(tmp_path, SRLM_TRAINING_BACKEND="slurm")
    failing = {Path(path).name: error for path, error in parsed["errors"].items()}
    assert set(failing) == {"srlm_iteration.py", "srlm_seed.py"}
    assert "srlm_training_backend='slurm'; expected one of ray, kubernetes, local" in failing["srlm_seed.py"]


def validate(dag, conf: dict):
    """What the API server does with a trigger's conf (the serialized DAG's params, deep-merged and validated)."""
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    return serialized.params.deep_merge(conf).validate()


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"iteration": 0}, "param iteration: 0 is less than the minimum of 1"),
        ({"num_candidates": 1}, "param num_candidates: 1 is less than the minimum of 2"),
        ({"backend": "tgi"}, "param backend: 'tgi' is not one of"),
        ({"store_uri": "gs://bucket/x"}, "param store_uri: 'gs://bucket/x' does not match"),
        ({"run_name": "my run"}, "param run_name: 'my run' does not match"),
        ({"temperature": "hot"}, "param temperature: 'hot' is not of type 'null', 'number'"),
        ({"top_p": 0}, "param top_p: 0 is less than or equal to the minimum of 0"),
        ({"auto_continue": "yes"}, "param auto_continue: 'yes' is not of type 'boolean'"),
    ],
)
def test_iteration_params_outside_their_schema_are_refused(dagbag, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError) as info:
        validate(dagbag.dags["srlm_iteration"], conf)
    assert str(info.value).splitlines()[0].startswith(f"Invalid input for param {conf and next(iter(conf))}")
    assert message in str(info.value).splitlines()[0]


def test_valid_trigger_conf_is_accepted_with_defaults_filled_in(dagbag):
    params = validate(
        dagbag.dags["srlm_iteration"], {"iteration": 2, "store_uri": "s3://srlm-bucket/store", "beta": 0.2}
    )
    assert params["iteration"] == 2 and params["beta"] == 0.2
    assert params["num_prompts"] is None and params["auto_continue"] is False and params["last_iteration"] == 3


def test_every_param_has_help_text(dagbag):
    for dag in dagbag.dags.values():
        for name, param in dag.params.items():
            assert param.description, f"{dag.dag_id}.{name} has no description"


def test_iteration_dag_chain_retries_pools_and_timeouts(dagbag):
    dag = dagbag.dags["srlm_iteration"]
    assert dag.max_active_runs == 1 and dag.schedule is None
    order = ["plan", "prompts", "generate", "judge", "meta_judge", "pairs", "dpo", "evaluate", "publish"]
    for upstream, downstream in zip(order, order[1:]):
        assert upstream in dag.get_task(downstream).upstream_task_ids, f"{upstream} → {downstream}"
    for task_id in ("prompts", "generate", "judge", "meta_judge", "dpo"):
        assert dag.get_task(task_id).pool == "srlm_gpu"
    assert dag.get_task("pairs").pool != "srlm_gpu"
    for task in dag.tasks:
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=24)
    generate = dag.get_task("generate")
    assert generate.retries == 2 and generate.retry_exponential_backoff == 2.0
    assert generate.max_retry_delay == timedelta(minutes=30)
    assert dag.get_task("plan").retries == 0  # a config error does not get better by retrying


def test_publish_updates_the_models_asset_and_continue_is_scheduled_on_it(dagbag):
    from airflow.sdk import Asset

    models = Asset(name="srlm_models", uri="srlm://models")
    for dag_id in ("srlm_iteration", "srlm_seed"):
        outlets = dagbag.dags[dag_id].get_task("publish").outlets
        assert [(o.name, o.uri) for o in outlets] == [(models.name, models.uri)]
    cont = dagbag.dags["srlm_continue"]
    assert [(a.name, a.uri) for a in cont.timetable.asset_condition.objects] == [("srlm_models", "srlm://models/")]
    assert cont.get_task("trigger_iteration").partial_kwargs.get("skip_when_already_exists") is True


def test_evaluate_backfill_creates_one_run_per_day_covering_that_day(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dagbag.dags["srlm_evaluate"]))
    first = datetime(2026, 3, 5, tzinfo=timezone.utc)
    # What `airflow backfill create --from-date 2026-03-05 --to-date 2026-03-07` schedules:
    infos = list(dag.iter_dagrun_infos_between(first, first + timedelta(days=2)))
    intervals = [(info.data_interval.start, info.data_interval.end) for info in infos]
    assert intervals == [(first + timedelta(days=d), first + timedelta(days=d + 1)) for d in range(3)]
    assert dagbag.dags["srlm_evaluate"].catchup is False  # unpausing does not replay history; a backfill does


def test_overriding_params_take_help_and_limits_from_the_config_field_metadata(dagbag):
    from srlm.config import field_doc
    from srlm_airflow.params import PARAM_OVERRIDES

    params = dagbag.dags["srlm_iteration"].params
    for name in ("num_prompts", "num_candidates", "judge_samples", "temperature", "top_p", "beta", "backend"):
        key = PARAM_OVERRIDES[name]
        doc, schema = field_doc(key), params.get_param(name).schema
        assert params.get_param(name).description.startswith(doc.help.rstrip(".")), name
        assert key in params.get_param(name).description
        for limit, value in (("minimum", doc.minimum), ("maximum", doc.maximum),
                             ("exclusiveMinimum", doc.exclusive_minimum), ("exclusiveMaximum", doc.exclusive_maximum)):
            assert schema.get(limit) == value, f"{name}.{limit}"
        assert schema.get("enum") == (None if doc.choices is None else [None, *doc.choices])
        assert params[name] is None  # empty: the config file's value


def test_task_timeouts_come_from_the_step_registry(dagbag):
    from srlm.steps import registry

    for dag_id, task_id in (("srlm_iteration", "generate"), ("srlm_iteration", "dpo"), ("srlm_seed", "sft"),
                            ("srlm_evaluate", "checkpoints"), ("srlm_iteration", "evaluate")):
        assert dagbag.dags[dag_id].get_task(task_id).execution_timeout == registry.step(task_id).timeout


def test_the_judge_health_gate_sits_between_pairs_and_dpo_with_an_optional_approval(dagbag):
    from srlm_airflow.operators.judge_approval import needs_approval

    dag = dagbag.dags["srlm_iteration"]
    gate = dag.get_task("judge_health")
    assert {"pairs", "judge"} <= gate.upstream_task_ids and gate.step == "judge_health"
    assert gate.pool != "srlm_gpu" and gate.return_key == "health"
    assert gate.options == {"on_failure": "{{ 'report' if params.judge_approval else 'fail' }}"}
    approve = dag.get_task("approve_judge")
    assert type(approve).__name__ == "JudgeApprovalOperator" and approve.upstream_task_ids == {"judge_health"}
    assert approve.ignore_downstream_trigger_rules is True  # a rejection skips DPO, evaluation and publishing
    assert approve.response_timeout == approve.execution_timeout == timedelta(hours=24) and approve.retries == 0
    accept = dag.get_task("accept_judge")
    assert accept.upstream_task_ids >= {"approve_judge"} and accept.step == "judge_health"
    assert accept.options["accepted_by"].startswith("Airflow approval")
    # DPO waits for the gate (and an approval when one was asked for); its default trigger rule: all upstream passed.
    dpo = dag.get_task("dpo")
    assert {"accept_judge", "pairs"} <= dpo.upstream_task_ids and dpo.trigger_rule == "all_success"
    assert validate(dag, {})["judge_approval"] is False  # approval only when a trigger asks for it
    # A person is asked only about a failed gate nobody accepted yet.
    assert needs_approval({"passed": False, "message": "judge health: …"})
    assert not needs_approval({"passed": True}) and not needs_approval(None)


def test_a_passed_gate_is_approved_without_asking_anyone():
    from srlm_airflow.operators.judge_approval import JudgeApprovalOperator

    passed = {"passed": True, "failed_checks": 0, "message": "judge health: every check passed"}
    approve = JudgeApprovalOperator(task_id="approve_judge", health=passed, subject="the judge")
    assert approve.execute(context={}) is None  # no human-in-the-loop request written, nothing awaited


def test_an_auto_continued_iteration_keeps_asking_for_judge_approval():
    from srlm_airflow.params import continuation_conf

    published = {"run": "r", "iteration": 1, "checkpoint_id": "M1", "checkpoint_uri": "s3://b/runs/r/models/M1",
                 "params": {"auto_continue": True, "last_iteration": 3, "judge_approval": True}}
    assert continuation_conf(published)["judge_approval"] is True


def test_the_iteration_shares_one_engine_pool_freed_before_dpo_and_torn_down_whatever_happens(dagbag):
    from airflow.task.trigger_rule import TriggerRule

    from srlm_airflow.dag_defaults import engine_scope, engine_scope_prefix

    dag = dagbag.dags["srlm_iteration"]
    up, free, down = (dag.get_task(t) for t in ("engines_up", "free_engines", "engines_down"))
    assert (up.step, free.step, down.step) == ("engines", "engines", "engines")
    assert up.options == {"action": "start", "reap_scope_prefix": engine_scope_prefix("srlm_iteration")}
    assert (free.options, down.options) == ({"action": "free"}, {"action": "stop"})
    # Setup before every generation task; the teardown after everything, run even when a task failed.
    assert up.is_setup and down.is_teardown and down.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS
    generation = {"prompts", "generate", "judge", "meta_judge", "evaluate"}
    assert generation <= up.get_flat_relative_ids(upstream=False)
    assert generation | {"dpo", "publish"} <= down.get_flat_relative_ids(upstream=True)
    # The engines free their memory after the last generation task on M_{t-1} and before training.
    assert {"judge", "meta_judge"} <= free.upstream_task_ids and "dpo" in free.downstream_task_ids
    assert dag.max_active_runs == 1  # what makes any other run's pool an orphan for engines_up to reap
    assert engine_scope("srlm_iteration", "manual__1").startswith(engine_scope_prefix("srlm_iteration"))


def test_the_plan_gives_every_step_the_runs_engine_scope(tmp_path):
    from srlm_airflow.params import plan_from_params

    plan = plan_from_params({"store_uri": str(tmp_path)}, iteration=1, model=None,
                            settings={"backend.engine_scope": "airflow:srlm_iteration:run-1"})  # fmt: skip
    assert plan.spec("generate").config["backend"]["engine_scope"] == "airflow:srlm_iteration:run-1"
