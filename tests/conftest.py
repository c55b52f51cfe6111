"""Shared pytest fixtures live in tests/fixtures/<area>.py, one module per owner, loaded as plugins."""

pytest_plugins = [
    "tests.fixtures.store",  # tmp_store, s3_server (moto ThreadedMotoServer), s3_store
    "tests.fixtures.models",  # tiny_model_dir (random-initialised, SmolLM2 architecture + tokenizer family)
    "tests.fixtures.orchestration",  # ray_head (real local Ray head + Jobs API), airflow_home, run_dag
    "tests.fixtures.ray_cluster",  # ray_two_nodes (a head + a joined node on this machine, module-scoped)
    "tests.fixtures.evaluation",  # register_run_checkpoint (a stand-in checkpoint registered in a run)
]
