"""srlm_iteration: one self-rewarding iteration per DAG run.

M_{t-1} → prompts → candidates → judgments → meta-judgments (Meta-Rewarding only) → pairs → judge health →
DPO → M_t → evaluation → publish.

The generation tasks share one engine pool (srlm.generation.engine_pool) scoped to the DAG run: the setup task
`engines_up` reaps pools left by earlier runs and starts it on M_{t-1}, prompts / generate / judge / meta_judge
attach to it (a retried task finds it running), `free_engines` stops it before DPO and waits until the training
job's resources are free, evaluation starts one on M_t, and the teardown task `engines_down` stops whatever is
left, also when a task failed or the run was cleared: two engine starts per iteration.

Each step runs as a Ray job (`python -m srlm.orchestration.task STEP --spec …`) that the task waits for in the
triggerer, not in a worker slot; training runs on the deployment's backend (ray | kubernetes | local: the
SRLM_TRAINING_BACKEND environment variable or the `srlm_training_backend` Variable, read when this file is parsed).
Tasks hand each other store URIs only. Every step is idempotent: a retry or a re-triggered run reuses committed
outputs (unless *Force*), and a retry reattaches to a still-running Ray job instead of starting a second one.

The judge-health gate (srlm.judging.health) checks the judgments and pairs before DPO. A failed gate fails its task
without retries, and the run stops before DPO with the gate's one-line reason; with *Ask for approval when the judge
fails* a person decides instead: the `approve_judge` task waits for Approve or Reject, an approval is recorded in
the gate's artifact (`accept_judge`) and DPO runs, a rejection (or no answer in time) ends the run without DPO.
After a passed gate `approve_judge` succeeds at once without asking.

Publishing emits an event on the `srlm://models` asset carrying the new checkpoint; with *Continue
automatically*, `srlm_continue` then triggers the next iteration up to *Last iteration*.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, task

from srlm_airflow.dag_defaults import (
    DEFAULT_ARGS,
    GPU_POOL,
    PLAN_TIMEOUT,
    START_DATE,
    build_plan,
    continuation_params,
    engine_scope,
    engine_scope_prefix,
    evaluate_and_publish,
    run_params,
    step_timeout,
)
from srlm_airflow.operators import SrlmStepOperator, training_operator
from srlm_airflow.operators.judge_approval import JudgeApprovalOperator
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
    "judge_approval": Param(
        False,
        type="boolean",
        title="Ask for approval when the judge fails",
        description="When the judge-health gate fails (judge_health thresholds), wait for a person to approve or "
        "reject the judge (task approve_judge) instead of failing the run. Approving records the override in the "
        "gate's artifact and trains M_t; rejecting, or no answer within a day, ends the run without DPO.",
    ),
    **continuation_params(),
}

# How long approve_judge waits for a person before the run ends without DPO.
APPROVAL_TIMEOUT = timedelta(hours=24)

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
    def plan(params: dict | None = None, run_id: str | None = None) -> dict:
        """Resolve the config file and params into the plan every step runs with; the run's generation steps share
        the engine pool of its scope."""
        from srlm.checkpoint_ids import previous_checkpoint_id

        iteration = int(params["iteration"])
        model = params.get("input_model") or previous_checkpoint_id(iteration)
        settings = {"backend.engine_scope": engine_scope(dag.dag_id, run_id)}
        return build_plan(params, iteration=iteration, model=model, settings=settings)

    run_plan = plan()

    def engines_task(task_id: str, options: dict, **kwargs) -> SrlmStepOperator:
        """A task of the `engines` step: it starts, frees or stops the run's engine pool."""
        return SrlmStepOperator(
            task_id=task_id, step="engines", plan=run_plan, options=options,
            execution_timeout=step_timeout("engines"), **kwargs,
        )  # fmt: skip

    # Setup: the engine pool every generation task attaches to. The DAG runs one run at a time (max_active_runs),
    # so a pool of another of its runs is an orphan (its run was deleted, or its teardown never ran) and is reaped.
    engines_up = engines_task(
        "engines_up", {"action": "start", "reap_scope_prefix": engine_scope_prefix(dag.dag_id)}, pool=GPU_POOL
    )

    prompts = SrlmStepOperator(
        task_id="prompts", step="prompts", plan=run_plan, pool=GPU_POOL, execution_timeout=step_timeout("prompts"),
    )
    engines_up >> prompts
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
    # Meta-Rewarding (run.method meta_rewarding): the model compares its own judgments; under self_rewarding the
    # step commits an empty judgment_pairs table without starting an engine, so both methods share this DAG.
    meta_judge = SrlmStepOperator(
        task_id="meta_judge",
        step="meta_judge",
        plan=run_plan,
        inputs={"candidates": generate.output, "judgments": judge.output},
        pool=GPU_POOL,
        execution_timeout=step_timeout("meta_judge"),
    )
    pairs = SrlmStepOperator(
        task_id="pairs",
        step="pairs",
        plan=run_plan,
        inputs={"candidates": generate.output, "judgments": judge.output},
        execution_timeout=step_timeout("pairs"),
    )
    meta_judge >> pairs  # Meta-Rewarding's length control and the DPO data read both
    # The gate. It fails its task (permanently: a retry measures the same) unless approval was asked for; then it
    # reports a failure in its result (health.passed false) and approve_judge asks a person.
    health_inputs = {"judgments": judge.output, "pairs": pairs.output}
    judge_health = SrlmStepOperator(
        task_id="judge_health",
        step="judge_health",
        plan=run_plan,
        inputs=health_inputs,
        options={"on_failure": "{{ 'report' if params.judge_approval else 'fail' }}"},
        return_key="health",
        execution_timeout=step_timeout("judge_health"),
    )
    # Succeeds at once after a passed gate; after a failed one it waits for Approve or Reject, and Reject (or no
    # answer in time) skips everything after it: accept_judge, DPO, evaluation and publishing.
    approve_judge = JudgeApprovalOperator(
        task_id="approve_judge",
        health=judge_health.output,
        subject="srlm: the judge failed its health check (iteration {{ params.iteration }}, run {{ params.run_name }})",
        body="{{ ti.xcom_pull(task_ids='judge_health')['message'] }}\n\nApprove to train M_{{ params.iteration }} "
        "on these pairs anyway (recorded in the gate's artifact); Reject to end this run without DPO.",
        ignore_downstream_trigger_rules=True,
        response_timeout=APPROVAL_TIMEOUT,
        execution_timeout=APPROVAL_TIMEOUT,
        retries=0,
    )
    # Records the approval in the gate's artifact (after a passed gate it reuses the committed result: a no-op).
    accept_judge = SrlmStepOperator(
        task_id="accept_judge",
        step="judge_health",
        plan=run_plan,
        inputs=health_inputs,
        options={"accepted_by": "Airflow approval (DAG run {{ run_id }}, task approve_judge)"},
        execution_timeout=step_timeout("judge_health"),
    )
    approve_judge >> accept_judge

    # The class is the deployment's training backend (ray | kubernetes | local), chosen when this file is parsed.
    dpo = training_operator(
        task_id="dpo",
        step="dpo",
        plan=run_plan,
        inputs={"pairs": pairs.output, "judgment_pairs": meta_judge.output},
        pool=GPU_POOL,
        execution_timeout=step_timeout("dpo"),
    )
    accept_judge >> dpo
    # The engines' memory goes to training: stop M_{t-1}'s pool once nothing generates on it any more, and wait
    # until Ray reports the training job's CPUs/GPUs free.
    free_engines = engines_task("free_engines", {"action": "free"})
    [judge, meta_judge] >> free_engines >> dpo
    published = evaluate_and_publish(run_plan, dpo.output, seed=False)

    # Teardown: stops the scope's pools (evaluation's on M_t, or M_{t-1}'s after a failure) whatever happened to
    # the tasks between it and engines_up; a run that ends without it leaves pools that the lease or the next
    # run's engines_up reaps.
    engines_down = engines_task("engines_down", {"action": "stop"})
    published >> engines_down.as_teardown(setups=engines_up)
