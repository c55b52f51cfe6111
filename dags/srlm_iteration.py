"""srlm_iteration: one self-rewarding iteration per DAG run.

M_{t-1} → prompts → candidates → judgments → pairs → DPO → M_t → evaluation → publish.

Each step runs as a Ray job (`python -m srlm.orchestration.task STEP --spec …`); training runs on the backend
chosen by the `srlm_training_backend` Variable (ray | kubernetes | local). Tasks hand each other store URIs only.
Every step is idempotent: a retry or a re-triggered run reuses committed outputs (unless *Force*), and a retry
reattaches to a still-running Ray job instead of starting a second one.

Publishing emits an event on the `srlm://models` asset carrying the new checkpoint; with *Continue
automatically*, `srlm_continue` then triggers the next iteration up to *Last iteration*.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from srlm_dag_defaults import (
    DEFAULT_ARGS,
    GPU_POOL,
    START_DATE,
    TIMEOUTS,
    build_plan,
    continuation_params,
    evaluate_and_publish,
    run_params,
)

from operators import SrlmStepOperator, TrainingJobOperator

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
    "num_prompts": Param(
        None, type=["null", "integer"], minimum=1, title="Prompts",
        description="New self-instruct prompts to keep (prompts.num_prompts). Empty: the config's value.",
    ),
    "num_candidates": Param(
        None, type=["null", "integer"], minimum=2, title="Candidates per prompt",
        description="Responses sampled per prompt (generate.num_candidates; paper: 4). Empty: the config's value.",
    ),
    "judge_samples": Param(
        None, type=["null", "integer"], minimum=1, title="Judge samples",
        description="Judgments averaged per candidate (judge.num_samples; paper: 3). Empty: the config's value.",
    ),
    "temperature": Param(
        None, type=["null", "number"], minimum=0, maximum=2, title="Temperature",
        description="Candidate sampling temperature (generate.temperature; paper: 0.7). Empty: the config's value.",
    ),
    "top_p": Param(
        None, type=["null", "number"], exclusiveMinimum=0, maximum=1, title="Top-p",
        description="Candidate nucleus sampling (generate.top_p; paper: 0.9). Empty: the config's value.",
    ),
    "beta": Param(
        None, type=["null", "number"], exclusiveMinimum=0, title="DPO beta",
        description="DPO β (dpo.beta; paper: 0.1). Empty: the config's value.",
    ),
    "backend": Param(
        None, type=["null", "string"], enum=[None, "auto", "vllm", "transformers"], title="Generation backend",
        values_display={None: "(the config's value)"},
        description="auto (vLLM when it imports), vllm, or transformers (backend.backend). Empty: the config's value.",
    ),
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

    @task(execution_timeout=TIMEOUTS["plan"], retries=0)
    def plan(params: dict | None = None) -> dict:
        """Resolve the config file and params into the plan every step runs with."""
        from srlm.orchestration.plan import previous_checkpoint

        iteration = int(params["iteration"])
        model = params.get("input_model") or previous_checkpoint(iteration)
        return build_plan(params, iteration=iteration, model=model)

    run_plan = plan()

    prompts = SrlmStepOperator(
        task_id="prompts", step="prompts", plan=run_plan, pool=GPU_POOL, execution_timeout=TIMEOUTS["prompts"]
    )
    generate = SrlmStepOperator(
        task_id="generate",
        step="generate",
        plan=run_plan,
        inputs={"prompts": prompts.output},
        pool=GPU_POOL,
        execution_timeout=TIMEOUTS["generate"],
    )
    judge = SrlmStepOperator(
        task_id="judge",
        step="judge",
        plan=run_plan,
        inputs={"candidates": generate.output},
        pool=GPU_POOL,
        execution_timeout=TIMEOUTS["judge"],
    )
    pairs = SrlmStepOperator(
        task_id="pairs",
        step="pairs",
        plan=run_plan,
        inputs={"candidates": generate.output, "judgments": judge.output},
        execution_timeout=TIMEOUTS["pairs"],
    )
    train = TrainingJobOperator(
        task_id="train",
        step="train",
        plan=run_plan,
        inputs={"pairs": pairs.output},
        pool=GPU_POOL,
        execution_timeout=TIMEOUTS["train"],
    )
    evaluate_and_publish(run_plan, train.output, seed=False)
