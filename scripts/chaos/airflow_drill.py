"""Chaos drill: SIGKILL Airflow's triggerer and scheduler while srlm_iteration runs, restart them, and check that
the run finishes with every candidate and judgment exactly once and no step's Ray job ran twice at once.

Slow (a real scheduler, DAG processor, triggerer, API server and Ray head; minutes on 2 cores), so it is a drill
rather than a CI test; the CI-sized faults are tests/test_chaos.py. Run from the repository root:

    .venv/bin/python scripts/chaos/airflow_drill.py [--keep]

What it does, on loopback only, every process in its own session and stopped by its process group at the end:
1. a temporary store with the tiny test model registered as M0 and the e2e seed data, a Ray head whose jobs load
   the e2e test stand-in (tests/fixtures/orchestration_shims: the random-weight model's self-instruct tasks and
   verdicts are substituted), and Airflow's components as `make up` starts them (tests/fixtures/live_airflow.py);
2. triggers srlm_iteration (iteration 1) through the REST API as the UI's user; when the generate task's Ray job
   runs (the task is deferred), SIGKILLs the triggerer's process group and starts a new triggerer; when the judge
   task's job runs, SIGKILLs the scheduler (with the LocalExecutor workers it forked) and starts a new one;
3. waits for the DAG run, then checks: the run succeeded; candidates and judgments hold each id once and the
   expected counts; at no poll were two Ray jobs of one task instance active; nothing it started is left.
Exit 0 when every check holds; the summary is printed as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

RUN_ID = "chaos-drill-1"
DAG = "srlm_iteration"
RUN_TIMEOUT_S = 3600.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (store, logs).")
    args = parser.parse_args(argv)

    from srlm.orchestration.ray_head import free_port, start_local_head
    from srlm.orchestration.ray_jobs import ACTIVE_STATUSES, RayJobs, resubmission_id, submission_id
    from srlm.store import RunLayout, artifacts
    from tests.fixtures.chaos import ProcessWatch
    from tests.fixtures.live_airflow import ApiError, LiveAirflow, prepare_tiny_run, stand_in_env
    from tests.test_dags_e2e import RUN

    root = Path(tempfile.mkdtemp(prefix="srlm-chaos-drill-"))
    store, config = prepare_tiny_run(root)
    layout = RunLayout(store, RUN)

    os.environ.update(stand_in_env(root))  # the Ray jobs inherit the head's environment
    summary: dict = {"root": str(root)}
    with ProcessWatch(also=str(root), interval=1.0) as watch:
        head = start_local_head(dashboard_port=free_port(), num_cpus=2, num_gpus=0,
                                temp_dir=f"/tmp/srlm-drill-{os.getpid()}", cwd=str(REPO))  # fmt: skip
        try:
            jobs = RayJobs(head.address)
            with LiveAirflow(root, head.address) as airflow:  # stopped before the head: its tasks poll the head
                api = airflow.api()
                conf = {"config_path": str(config), "store_uri": store, "run_name": RUN, "iteration": 1}
                api.trigger(DAG, RUN_ID, conf)

                faults = [("generate", "triggerer"), ("judge", "scheduler")]
                most_active: dict[str, int] = {}
                state, deadline, polls = None, time.monotonic() + RUN_TIMEOUT_S, 0
                while state not in ("success", "failed") and time.monotonic() < deadline:
                    polls += 1
                    for task in ("prompts", "generate", "judge", "pairs", "dpo"):
                        base = submission_id(DAG, RUN_ID, task)
                        active = sum(jobs.status(resubmission_id(base, n)) in ACTIVE_STATUSES for n in range(4))
                        most_active[task] = max(most_active.get(task, 0), active)
                        if faults and faults[0][0] == task and active:
                            name = faults.pop(0)[1]
                            airflow.components[name].kill()
                            summary.setdefault("faults", []).append(f"SIGKILL {name} while {task}'s job ran")
                            time.sleep(5)
                            airflow.components[name].start()
                    if polls % 10 == 0:
                        with contextlib.suppress(ApiError):  # the API server is up throughout; a hiccup is retried
                            state = api.dag_run(DAG, RUN_ID)["state"]
                    time.sleep(1)
            summary["state"], summary["most_active_jobs_per_task"] = state, most_active
            candidates = artifacts.read_table(layout.candidates(1), "candidates").column("candidate_id").to_pylist()
            judgments = artifacts.read_table(layout.judgments(1)).num_rows
            summary["candidates"] = {"rows": len(candidates), "unique": len(set(candidates))}
            summary["judgments"] = judgments
            summary["generate_jobs"] = [jobs.status(resubmission_id(submission_id(DAG, RUN_ID, "generate"), n))
                                        for n in range(3)]  # fmt: skip
        finally:
            head.stop()
            shutil.rmtree(head.temp_dir, ignore_errors=True)
        summary["left_running"] = watch.stop()
        print(json.dumps(summary, indent=2), flush=True)
    ok = (
        summary.get("state") == "success"
        and summary["candidates"]["rows"] == summary["candidates"]["unique"] == 4 * 3
        and max(summary["most_active_jobs_per_task"].values()) <= 1
        and not summary["left_running"]
        and len(summary.get("faults", [])) == 2  # both faults were injected
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
