"""Airflow-free helpers the orchestration layer (dags/, operators/) calls; nothing here imports Airflow.

    spec           StepSpec: one step's resolved config + inputs, as JSON for `python -m srlm.orchestration.task`
    task           that entry point (the same in a Ray job, a Kubernetes pod, a local subprocess)
    result         the `srlm-task-result:` line a step ends its log with, and exit-code conventions
    plan           DAG params → RunPlan (resolved config), and auto-continuation to the next iteration
    ray_jobs       Ray Jobs API: deterministic submission ids, reattach / resubmit / follow logs / stop
    ray_head       the embedded local Ray head (`make up`, or started on demand)
    store_env      S3 credentials/endpoint as the environment variables a job receives
    local_process  a step as a local subprocess (the `local` training backend)
"""
