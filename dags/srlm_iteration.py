"""srlm_iteration: one self-rewarding iteration per DAG run.

M_{t-1} → prompts → candidates → judgments → pairs → DPO → M_t → evaluation → publish.

Each step runs as a Ray job (`python -m srlm.orchestration.task STEP --spec …`) that the task waits for in the
triggerer, not in a worker slot; training runs on the deployment's backend (ray | kubernetes | local: the
SRLM_TRAINING_BACKEND environment variable or the `srlm_training_backend` Variable, read when this file is parsed).
Tasks hand each other store URIs only. Every step is idempotent: a retry or a re-triggered run reuses committed
outputs (unless *Force*), and a retry reattaches to a still-running Ray job instead of starting a second one.

Publishing emits an event on the `srlm://models` asset carrying the new checkpoint; with *Continue
automatically*, `srlm_continue` then triggers the next iteration up to *Last iteration*.
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
from srlm_airflow.operators import SrlmStepOperator, training_operator
from srlm_airflow.params import override_param

ITERATION_PARAMS = {
    "iteration": Param(
        1,
        type="integer",
        minimum=1,
        title="Iteration",
        description="Iteration t (1-based) trains M_t from M_{t-1}; M0 is the seed SFT model (srlm_seed).",
    ),
    "input_model": Param(
        None,
        type=["null", "string"],
        title="Input model",
        description="M_{t-1}, as its registered id (M0, M1, …) or its store URI; checked against the run's "
        "registry, since DPO trains from the registered M_{t-1}. Empty: M_{t-1} from the registry.",
    ),
    **run_params(),
    # Each overrides one config key; description, type and limits come from the config's field metadata.
    "num_prompts": override_param("num_prompts", title="Prompts"),
    "num_candidates": override_param("num_candidates", title="Candidates per prompt"),
    "judge_samples": override_param("judge_samples", title="Judge samples"),
    "temperature": override_param("temperature", title="Temperature"),
    "top_p": override_param("top_p", title="Top-p"),
    "beta": override_param("beta", title="DPO beta"),
    "backend": override_param("backend", title="Generation backend"),
    **continuation_params(),
}

with DAG(
    dag_id="srlm_iteration",
    description="One self-rewarding iteration: M_{t-1} → M_t",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # iterations of a run are sequential; two at once would also fight over the GPUs
    default_args=DEFAULT_ARGS,
    params=ITERATION_PARAMS,
    tags=["srlm"],
    doc_md=__doc__,
) as dag:

    @task(execution_timeout=PLAN_TIMEOUT, retries=0)
    def plan(params: dict | None = None) -> dict:
        """Resolve the config file and params into the plan every step runs with."""
        from srlm.checkpoint_ids import previous_checkpoint_id

        iteration = int(params["iteration"])
        model = params.get("input_model") or previous_checkpoint_id(iteration)
        return build_plan(params, iteration=iteration, model=model)

    run_plan = plan()

    prompts = SrlmStepOperator(
        task_id="prompts", step="prompts", plan=run_plan, pool=GPU_POOL, execution_timeout=step_timeout("prompts"),
    )
    generate = SrlmStepOperator(
        task_id="generate",
        step="generate",
        plan=run_plan,
        inputs={"prompts": prompts.output},
        pool=GPU_POOL,
        execution_timeout=step_timeout("generate"),
    )
    judge = SrlmStepOperator(
        task_id="judge",
        step="judge",
        plan=run_plan,
        inputs={"candidates": generate.output},
        pool=GPU_POOL,
        execution_timeout=step_timeout("judge"),
    )
    pairs = SrlmStepOperator(
        task_id="pairs",
        step="pairs",
        plan=run_plan,
        inputs={"candidates": generate.output, "judgments": judge.output},
        execution_timeout=step_timeout("pairs"),
    )
    # The class is the deployment's training backend (ray | kubernetes | local), chosen when this file is parsed.
    dpo = training_operator(
        task_id="dpo",
        step="dpo",
        plan=run_plan,
        inputs={"pairs": pairs.output},
        pool=GPU_POOL,
        execution_timeout=step_timeout("dpo"),
    )
    evaluate_and_publish(run_plan, dpo.output, seed=False)
