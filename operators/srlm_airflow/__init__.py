"""srlm_airflow: srlm's Airflow provider — the `ray` connection type (RayJobsHook), the operators the DAGs use, the
trigger long Ray jobs wait in, the "Ray job" link, and what the DAG files share (dag_defaults, params).

Installed with srlm (`pip install 'srlm[airflow]'`; the Kubernetes training backend also needs `srlm[k8s]`) and
registered through the `apache_airflow_provider` entry point (srlm_airflow.get_provider_info), so DAG files import
it like any provider and Airflow lists its connection type. Everything Airflow-specific lives here; the library
`srlm` stays Airflow-free.

    hooks              RayJobsHook (conn type `ray`, default `ray_default`): endpoint parsing → srlm RayJobs
    store_credentials  the AWS connection (or the worker's AWS_* environment) → a job's store environment
    triggers           RayJobTrigger: a Ray job followed from the triggerer (deferrable operators)
    links              RayJobLink: the "Ray job" button of a task instance
    operators          RayJobOperator, SrlmStepOperator, training operators per backend + training_operator()
    params             DAG params ↔ config keys, Params from the config's field metadata, auto-continuation
    dag_defaults       assets, pool, retry policy, timeouts, shared params and tasks of the srlm DAGs

Importing the package itself is free; DAG files import the submodules they use.
"""
