"""Airflow-free helpers the orchestration layer (dags/, the srlm_airflow package) calls; nothing here imports
Airflow, and nothing here knows Airflow connections or DAG params (those live in srlm_airflow).

    spec           StepSpec: one step's resolved config + inputs, as JSON for `python -m srlm.orchestration.task`
    task           that entry point (the same in a Ray job, a Kubernetes pod, a local subprocess)
    result         the `srlm-task-result:` line a step ends its log with, and exit-code conventions
    plan           config file + dotted overrides → RunPlan (the resolved config every step of a run uses)
    ray_jobs       Ray Jobs API: deterministic submission ids, reattach / resubmit / follow logs / stop
    ray_head       the embedded local Ray head (`make up`, or started on demand)
    store_env      S3 credentials/endpoint as the environment variables a job receives, and which are secret
    local_process  a step as a local subprocess (the `local` training backend)
"""
