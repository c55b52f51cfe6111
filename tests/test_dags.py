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
HEAVY_MODULES = ("torch", "transformers", "vllm", "ray", "pyarrow", "srlm.steps", "srlm.training", "srlm.evaluation")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PARSE_SCRIPT = f"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
bag = BundleDagBag(dag_folder={str(DAGS)!r}, bundle_path=Path({str(DAGS)!r}), bundle_name="dags-folder")
heavy = sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)
print("PARSED " + json.dumps({{"dags": sorted(bag.dags), "errors": bag.import_errors, "heavy": heavy}}))
"""


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS, bundle_name="dags-folder")
    assert not bag.import_errors
    return bag


def test_dag_files_import_without_errors_or_heavy_modules(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", PARSE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PARSED ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    parsed = json.loads(lines[-1][len("PARSED "):])
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == DAG_IDS
    assert parsed["heavy"] == []  # parsing must stay fast: no torch/ray/pyarrow/srlm.steps at import time


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
    order = ["plan", "prompts", "generate", "judge", "pairs", "train", "evaluate", "publish"]
    for upstream, downstream in zip(order, order[1:]):
        assert upstream in dag.get_task(downstream).upstream_task_ids, f"{upstream} → {downstream}"
    for task_id in ("prompts", "generate", "judge", "train"):
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
