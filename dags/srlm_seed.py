"""srlm_seed: the seed SFT — fine-tune the base model on IFT + EFT seed data into M0, evaluate it, publish it.

Run once per run name, before srlm_iteration. With *Continue automatically*, publishing M0 triggers iteration 1
(and each iteration the next, up to *Last iteration*) through srlm_continue.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from srlm_airflow.dag_defaults import (
    DEFAULT_ARGS,
    GPU_POOL,
    PLAN_TIMEOUT,
    START_DATE,
    build_plan,
    continuation_params,
    evaluate_and_publish,
    run_params,
    step_timeout,
)
from srlm_airflow.operators import training_operator

SEED_PARAMS = {
    "base_model": Param(
        None,
        type=["null", "string"],
        title="Base model",
        description="The pretrained model to fine-tune: an alias (smollm2-135m), a local HF directory, a store URI "
        "or a hub id. Empty: model.base from the config.",
    ),
    **run_params(),
    **continuation_params(),
}

with DAG(
    dag_id="srlm_seed",
    description="Seed SFT on IFT + EFT data: base model → M0",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=SEED_PARAMS,
    tags=["srlm"],
    doc_md=__doc__,
) as dag:

    @task(execution_timeout=PLAN_TIMEOUT, retries=0)
    def plan(params: dict | None = None) -> dict:
        """Resolve the config file and params; the base model param overrides model.base."""
        return build_plan(params, iteration=0, model=params.get("base_model"))

    run_plan = plan()

    # The class is the deployment's training backend (ray | kubernetes | local), chosen when this file is parsed.
    sft = training_operator(
        task_id="sft", step="sft", plan=run_plan, pool=GPU_POOL, execution_timeout=step_timeout("sft")
    )
    evaluate_and_publish(run_plan, sft.output, seed=True)
