"""srlm_evaluate: evaluate every checkpoint registered during the run's data interval (one day per run).

Each checkpoint becomes one mapped `evaluate` task. Results are keyed by (checkpoint, suite, suite version) and
committed atomically, so re-running a day — or backfilling a range — evaluates only what has no committed result
yet; *Force* recomputes and replaces them. Backfill a period with

    airflow backfill create --dag-id srlm_evaluate --from-date 2026-03-01 --to-date 2026-03-07

which creates one run per day; each lists the checkpoints whose registry entry was created that day.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from srlm_airflow.dag_defaults import DEFAULT_ARGS, PLAN_TIMEOUT, START_DATE, build_plan, run_params, step_timeout
from srlm_airflow.operators import SrlmStepOperator

EVALUATE_PARAMS = {
    **run_params(),
    "suites": Param(
        [],
        type="array",
        items={"type": "string", "minLength": 1},
        uniqueItems=True,
        title="Suites",
        description="Evaluation suites to run on each checkpoint (e.g. reward_model, monitors). "
        "Empty: the evaluation module's default suites.",
    ),
}


with DAG(
    dag_id="srlm_evaluate",
    description="Evaluate the checkpoints registered in each day (backfill-friendly, idempotent)",
    # A data-interval timetable: each run covers [data_interval_start, data_interval_end), so a backfill over
    # a date range covers every checkpoint registered in it exactly once.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,  # unpausing does not replay history; `airflow backfill create` does, on request
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    params=EVALUATE_PARAMS,
    tags=["srlm"],
    doc_md=__doc__,
) as dag:

    @task(execution_timeout=PLAN_TIMEOUT, retries=0)
    def plan(params: dict | None = None) -> dict:
        return build_plan(params, iteration=0, model=None)

    run_plan = plan()

    checkpoints = SrlmStepOperator(
        task_id="checkpoints",
        step="checkpoints",
        plan=run_plan,
        options={
            "registered_from": "{{ data_interval_start.isoformat() }}",
            "registered_to": "{{ data_interval_end.isoformat() }}",
        },
        return_key="checkpoints",
        execution_timeout=step_timeout("checkpoints"),
    )

    @task(execution_timeout=PLAN_TIMEOUT)
    def targets(checkpoints: list[dict], params: dict | None = None) -> list[dict]:
        """One evaluate task per checkpoint registered in the interval (none: the evaluate task is skipped)."""
        return [
            {
                "options": {"checkpoint": c["checkpoint_id"], "suites": list(params["suites"])},
                "iteration": c["iteration"],
            }
            for c in checkpoints
        ]

    SrlmStepOperator.partial(
        task_id="evaluate",
        step="evaluate",
        plan=run_plan,
        execution_timeout=step_timeout("evaluate"),
        max_active_tis_per_dagrun=1,  # checkpoints of one day are evaluated one after another
    ).expand_kwargs(targets(checkpoints.output))
