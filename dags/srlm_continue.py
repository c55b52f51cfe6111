"""srlm_continue: when a checkpoint is published with *Continue automatically*, trigger the next iteration.

Scheduled on the `srlm://models` asset. For each event whose run asked for it (and whose next iteration is not
beyond *Last iteration*) it triggers srlm_iteration with iteration + 1, the published checkpoint as input model,
and the same settings. The triggered run id is derived from (run name, iteration), so a repeated event never
starts a second run of the same iteration.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from srlm_airflow.dag_defaults import DEFAULT_ARGS, MODELS_ASSET, PUBLISH_TIMEOUT, START_DATE

with DAG(
    dag_id="srlm_continue",
    description="Trigger the next srlm iteration after a checkpoint is published (auto_continue)",
    schedule=[MODELS_ASSET],
    start_date=START_DATE,
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["srlm"],
    doc_md=__doc__,
) as dag:

    @task(execution_timeout=PUBLISH_TIMEOUT, retries=0)
    def next_iterations(triggering_asset_events=None) -> list[dict]:
        """The srlm_iteration runs to trigger: one per published checkpoint that asked to continue."""
        from srlm_airflow.params import continuation_conf, continuation_run_id

        triggers = []
        for event in triggering_asset_events[MODELS_ASSET]:
            conf = continuation_conf(event.extra or {})
            if conf is not None:
                triggers.append(
                    {"conf": conf, "trigger_run_id": continuation_run_id(event.extra["run"], conf["iteration"])}
                )
        return triggers

    TriggerDagRunOperator.partial(
        task_id="trigger_iteration",
        trigger_dag_id="srlm_iteration",
        skip_when_already_exists=True,
        execution_timeout=PUBLISH_TIMEOUT,
    ).expand_kwargs(next_iterations())
