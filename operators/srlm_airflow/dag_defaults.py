"""What the srlm DAGs share: the models Asset, the GPU pool, retry policy, task time limits, the run-selecting
params, and the evaluate → publish tasks that end the training DAGs.

Parse-time cheap: Airflow's SDK, the stdlib, srlm.config (field metadata) and srlm.steps.registry (stdlib only).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import Asset, Param, task

from srlm.steps import registry
from srlm_airflow.operators import SrlmStepOperator
from srlm_airflow.params import INHERITED_PARAMS, PARAM_OVERRIDES, field_schema, plan_from_params

# Every checkpoint srlm publishes (M0 from the seed DAG, M_t from an iteration) is an event on this asset; the
# event's extra says which run, iteration and checkpoint URI. srlm_continue is scheduled on it.
MODELS_ASSET = Asset(name="srlm_models", uri="srlm://models", group="model")

# Generation engines and trainers hold a GPU each: the pool keeps Airflow from starting more than the GPUs Ray
# has (make up creates it with 1 slot; size it to the cluster's GPUs).
GPU_POOL = "srlm_gpu"

START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)

DEFAULT_ARGS = {
    "owner": "srlm",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,  # 1 min, 2 min, 4 min … capped below
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=6),
}

# Time limits of the DAG's own tasks (the steps' limits are in the step registry).
PLAN_TIMEOUT = timedelta(minutes=5)
PUBLISH_TIMEOUT = timedelta(minutes=5)


def step_timeout(step: str) -> timedelta:
    """A step task's time limit: the step registry's (long enough for the paper's sizes on one GPU, short enough
    to catch a hung engine)."""
    return registry.step(step).timeout


# The config a trigger starts from unless it names another: SRLM_CONFIG (the Helm chart mounts the deployment's
# config there), else the 2-core CPU quickstart config of the repository.
DEFAULT_CONFIG = os.environ.get("SRLM_CONFIG", "configs/quickstart.yaml")

# A local path, file://path, or s3://bucket[/prefix] (the store's schemes; anything else is refused at trigger).
STORE_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+|[^:]+)$"


def config_search_paths() -> tuple[Path, ...]:
    """Where a relative config_path is looked up: the folder that holds the DAGs folder (the repository, or
    /opt/srlm in the image), which has configs/."""
    from airflow.sdk import conf

    return (Path(conf.get("core", "dags_folder")).expanduser().resolve().parent,)


def run_params(*, config_path: str | None = DEFAULT_CONFIG) -> dict[str, Param]:
    """Params that say which config, store and run a DAG run works on (shared by every srlm DAG)."""
    from srlm.config import field_doc

    run_name = field_doc(PARAM_OVERRIDES["run_name"])
    return {
        "config_path": Param(
            config_path,
            type=["null", "string"],
            title="Config file",
            description="srlm YAML config (relative paths resolve against the repository root). "
            "Empty: the paper's defaults for every key.",
        ),
        "store_uri": Param(
            None,
            type=["null", "string"],
            pattern=STORE_URI_PATTERN,
            title="Store URI",
            description=f"{field_doc(PARAM_OVERRIDES['store_uri']).help} "
            "Empty: store.uri from the config. S3 credentials come from the aws_default connection.",
        ),
        "run_name": Param(
            run_name.default,
            title="Run name",
            description=run_name.help,
            **field_schema(PARAM_OVERRIDES["run_name"]),
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Recompute outputs that are already committed (otherwise every step reuses them).",
        ),
    }


def continuation_params() -> dict[str, Param]:
    """Params that decide whether a published checkpoint starts the next iteration (see srlm_continue)."""
    return {
        "auto_continue": Param(
            False,
            type="boolean",
            title="Continue automatically",
            description="When this run publishes its checkpoint, trigger srlm_iteration for the next "
            "iteration with the same settings.",
        ),
        "last_iteration": Param(
            3,
            type="integer",
            minimum=1,
            title="Last iteration",
            description="Automatic continuation stops after this iteration (the paper trains M1 → M3).",
        ),
    }


def build_plan(params: dict, *, iteration: int, model: str | None, settings: dict | None = None) -> dict:
    """Resolve config + params (+ the DAG's own `settings`, dotted config keys) into the run's plan (called inside a
    task, never at parse time).

    A config error fails the task at once: retrying cannot fix a typo in a YAML file.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from srlm.errors import SrlmError

    try:
        return plan_from_params(
            params, iteration=iteration, model=model, search=config_search_paths(), settings=settings
        ).to_dict()
    except SrlmError as exc:
        raise AirflowFailException(str(exc)) from exc


def engine_scope_prefix(dag_id: str) -> str:
    """The start of every engine scope a DAG's runs use (srlm.generation.engine_pool)."""
    return f"airflow:{dag_id}:"


def engine_scope(dag_id: str, run_id: str) -> str:
    """backend.engine_scope of one DAG run: its generation tasks share one engine pool, which its teardown stops."""
    return f"{engine_scope_prefix(dag_id)}{run_id}"


def published_event(
    plan: dict, params: dict, *, iteration: int, checkpoint_uri: str, evaluation_uri: str | None
) -> dict:
    """The extra of a models-asset event: what was published, and the params a continuation inherits."""
    from srlm.checkpoint_ids import checkpoint_id

    return {
        "run": plan["config"]["run"]["name"],
        "store_uri": plan["config"]["store"]["uri"],
        "iteration": iteration,
        "checkpoint_id": checkpoint_id(iteration),
        "checkpoint_uri": checkpoint_uri,
        "evaluation_uri": evaluation_uri,
        "params": {name: params[name] for name in INHERITED_PARAMS if name in params},
    }


def evaluate_and_publish(run_plan, checkpoint_uri, *, seed: bool):
    """The tasks that end a training DAG: evaluate the new checkpoint (M0 for the seed DAG, else M_t of the
    `iteration` param), then publish it as an event on the models asset, which srlm_continue listens to."""
    evaluate = SrlmStepOperator(
        task_id="evaluate",
        step="evaluate",
        plan=run_plan,
        inputs={"model": checkpoint_uri},
        options={"checkpoint": "M0" if seed else "M{{ params.iteration }}"},
        execution_timeout=step_timeout("evaluate"),
    )

    @task(outlets=[MODELS_ASSET], execution_timeout=PUBLISH_TIMEOUT)
    def publish(plan: dict, checkpoint_uri: str, evaluation_uri: str, params: dict | None = None,
                outlet_events=None) -> str:
        """Announce the checkpoint on the models asset; srlm_continue starts the next iteration when asked to."""
        iteration = 0 if seed else int(params["iteration"])
        outlet_events[MODELS_ASSET].extra = published_event(
            plan, params, iteration=iteration, checkpoint_uri=checkpoint_uri, evaluation_uri=evaluation_uri
        )
        return checkpoint_uri

    return publish(run_plan, checkpoint_uri, evaluate.output)
