"""One quickstart-sized iteration through `srlm iterate` and through the srlm_iteration DAG, side by side in one run.

The DAG runs each step as its own Ray job; what that costs over `srlm iterate` (one process) is the orchestration
overhead: Ray job and Airflow task start-up, the scheduler's and triggerer's polling, and, before engine pools, an
engine start per generation task. This measures both paths on the same M0, the same config and the same Ray head,
and counts the engine starts of each from the engine pools' own log lines in the head's logs
(srlm.generation.engine_pool.START_LOG_MARK), not from what the code is expected to do.

One run:
1. M0: `srlm run --config CONFIG --set run.iterations=0` into a fresh local store (the seed SFT, ~7.5 min on 2
   cores), or `--m0-store DIR` to reuse a store that has it;
2. a local Ray head (srlm.orchestration.ray_head, as `make up` starts it) with every core;
3. `srlm iterate -t 1` on a copy of that store, connected to the head (RAY_ADDRESS);
4. Airflow's scheduler, DAG processor, triggerer and API server as `make up` runs them
   (tests/fixtures/live_airflow.py; their start-up is not timed), srlm_iteration triggered through the REST API
   as the UI's user on a second copy of the store, timed from the trigger until the run succeeded.
The DAG also evaluates M1 (its evaluate task; `srlm iterate` does not), which is part of its time and its engine
starts; the per-task durations are reported so that share can be read off.

    .venv/bin/python bench/iteration_overhead.py [--config configs/quickstart.yaml] [--m0-store DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.fixtures.live_airflow

DAG = "srlm_iteration"
RUN_TIMEOUT_S = 3600.0


def engine_starts(temp_dir: str) -> int:
    """Engine pool starts recorded so far in the Ray head's worker logs."""
    from srlm.generation.engine_pool import START_LOG_MARK

    count = 0
    for session in Path(temp_dir).glob("session_*"):
        if session.is_symlink():  # session_latest points at a session counted under its own name
            continue
        for path in session.glob("logs/worker-*.out"):
            count += path.read_text(errors="replace").count(START_LOG_MARK)
    return count


def srlm(*args: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "srlm"), *args], cwd=REPO, env=env)
    if done.returncode != 0:
        raise SystemExit(f"srlm {' '.join(args)} failed with exit {done.returncode}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml", help="The run's config (default: quickstart).")
    parser.add_argument("--m0-store", default=None, help="A local store whose run already has M0 (skips the SFT).")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON only.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (stores, logs).")
    args = parser.parse_args(argv)

    from srlm.config import load_config
    from srlm.orchestration.ray_head import free_port, start_local_head
    from tests.fixtures.live_airflow import LiveAirflow

    config_path = str((REPO / args.config).resolve())
    run_name = load_config(config_path).run.name
    root = Path(tempfile.mkdtemp(prefix="srlm-bench-overhead-"))
    result: dict[str, Any] = {"config": args.config, "cpus": os.cpu_count()}
    try:
        m0_store = Path(args.m0_store).resolve() if args.m0_store else root / "m0-store"
        if not args.m0_store:
            result["m0_seconds"] = srlm(
                "run", "--config", config_path, "--set", f"store.uri={m0_store}", "--set", "run.iterations=0",
                "--set", "verdict.enabled=false",
            )  # fmt: skip
        stores = {name: root / f"store-{name}" for name in ("iterate", "dag")}
        for store in stores.values():
            shutil.copytree(m0_store, store)

        temp_dir = f"/tmp/srlm-bench-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
        head = start_local_head(dashboard_port=free_port(), num_cpus=os.cpu_count() or 1, num_gpus=0,
                                temp_dir=temp_dir, cwd=str(REPO))  # fmt: skip
        try:
            env = {**os.environ, "RAY_ADDRESS": head.gcs_address}
            before = engine_starts(temp_dir)
            iterate_s = srlm("iterate", "--config", config_path, "--set", f"store.uri={stores['iterate']}", "-t", "1",
                             env=env)  # fmt: skip
            result["iterate"] = {"seconds": iterate_s, "engine_starts": engine_starts(temp_dir) - before}

            before = engine_starts(temp_dir)
            with LiveAirflow(root, head.address) as airflow:
                api = airflow.api()
                run_id = f"bench-{int(time.time())}"
                conf = {"config_path": config_path, "store_uri": str(stores["dag"]), "run_name": run_name, "iteration": 1}
                start = time.perf_counter()
                api.trigger(DAG, run_id, conf)
                run = api.wait_for_run(DAG, run_id, RUN_TIMEOUT_S)
                dag_s = time.perf_counter() - start
                tasks = api.request("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
            result["dag"] = {
                "seconds": dag_s,
                "state": run["state"],
                "engine_starts": engine_starts(temp_dir) - before,
                "tasks": {t["task_id"]: {"seconds": t.get("duration"), "tries": t.get("try_number"),
                                         "state": t["state"]} for t in tasks},  # fmt: skip
                "runner": "real scheduler (LiveAirflow: the components `make up` starts), triggered via the REST API",
            }
        finally:
            head.stop()
            shutil.rmtree(temp_dir, ignore_errors=True)
        result["ratio_dag_over_iterate"] = result["dag"]["seconds"] / result["iterate"]["seconds"]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            result["root"] = str(root)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(json.dumps(result, indent=1))
    print(
        f"\nsrlm iterate: {result['iterate']['seconds']:.0f} s, {result['iterate']['engine_starts']} engine start(s)\n"
        f"srlm_iteration DAG: {result['dag']['seconds']:.0f} s ({result['dag']['state']}), "
        f"{result['dag']['engine_starts']} engine start(s)\n"
        f"DAG ÷ iterate: {result['ratio_dag_over_iterate']:.2f}x"
    )
    return 0 if result["dag"]["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
