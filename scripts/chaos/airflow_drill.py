"""Chaos drill: SIGKILL Airflow's triggerer and scheduler while srlm_iteration runs, restart them, and check that
the run finishes with every candidate and judgment exactly once and no step's Ray job ran twice at once.

Slow (a real scheduler, DAG processor, triggerer, API server and Ray head; minutes on 2 cores), so it is a drill
rather than a CI test; the CI-sized faults are tests/test_chaos.py. Run from the repository root:

    .venv/bin/python scripts/chaos/airflow_drill.py [--keep]

What it does, on loopback only, every process in its own session and stopped by its process group at the end:
1. a temporary store with the tiny test model registered as M0 and the e2e seed data (tests/test_dags_e2e.py),
   a Ray head whose jobs load the e2e test stand-in (tests/fixtures/orchestration_shims: the random-weight
   model's self-instruct tasks and verdicts are substituted), and Airflow's components as `make up` starts them;
2. triggers srlm_iteration (iteration 1); when the generate task's Ray job runs (the task is deferred), SIGKILLs
   the triggerer's process group and starts a new triggerer; when the judge task's job runs, SIGKILLs the
   scheduler (with the LocalExecutor workers it forked) and starts a new one;
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
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

RUN_ID = "chaos-drill-1"
DAG = "srlm_iteration"
RUN_TIMEOUT_S = 3600.0


def _airflow_env(home: Path, api_port: int, jobs_address: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST="127.0.0.1",
        RAY_JOBS_ADDRESS=jobs_address,
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


class Component:
    """One Airflow component in its own session, logging to a file; stopped (or killed) by its process group."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env, self.logs = name, args, env, logs
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        out = open(self.logs / f"{self.name}.log", "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", *self.args], env=self.env, cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the group, reap the leader (a zombie leader keeps the group "alive"), SIGKILL what is left."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _run_state(env: dict[str, str]) -> str | None:
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "list-runs", DAG, "-o", "json"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # The JSON is the last line; warnings (also on stdout) come before it.
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    try:
        runs = json.loads(lines[-1]) if lines else []
    except json.JSONDecodeError:
        return None
    return next((run["state"] for run in runs if run.get("run_id") == RUN_ID), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (store, logs).")
    args = parser.parse_args(argv)

    from srlm.models.tiny import build_tiny_model
    from srlm.orchestration.ray_head import free_port, start_local_head
    from srlm.orchestration.ray_jobs import ACTIVE_STATUSES, RayJobs, resubmission_id, submission_id
    from srlm.store import RunLayout, artifacts
    from srlm.training.registry import register_checkpoint
    from tests.fixtures.chaos import ProcessWatch
    from tests.fixtures.orchestration import SHIMS_DIR
    from tests.test_dags_e2e import RUN, write_config, write_seed_data

    root = Path(tempfile.mkdtemp(prefix="srlm-chaos-drill-"))
    logs = root / "logs"
    logs.mkdir()
    store = str(root / "store")
    layout = RunLayout(store, RUN)
    model = build_tiny_model(root / "tiny", seed=0)
    artifacts.write_directory(layout.model("M0"), model)
    register_checkpoint(layout, "M0", 0, layout.model("M0"), None, "sft", 1, True, None, {})
    config = write_config(root / "drill.yaml", model, root / "model-cache", write_seed_data(store))

    # The Ray jobs inherit the head's environment: the test stand-in for the random-weight model.
    os.environ.update(PYTHONPATH=f"{SHIMS_DIR}{os.pathsep}{REPO}", SRLM_TEST_QUALITY_SHIM="1",
                      SRLM_CACHE_DIR=str(root / "srlm-cache"))  # fmt: skip
    summary: dict = {"root": str(root)}
    components: dict[str, Component] = {}
    head = None
    with ProcessWatch(also=str(root), interval=1.0) as watch:
        try:
            head = start_local_head(dashboard_port=free_port(), num_cpus=2, num_gpus=0,
                                    temp_dir=f"/tmp/srlm-drill-{os.getpid()}", cwd=str(REPO))  # fmt: skip
            jobs = RayJobs(head.address)
            env = _airflow_env(root / "airflow-home", free_port(), head.address)
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=REPO, check=True,
                           capture_output=True, timeout=600)  # fmt: skip
            subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "srlm_gpu", "1", "drill",
                            "--include-deferred"], env=env, cwd=REPO, check=True, capture_output=True)  # fmt: skip
            components = {
                "scheduler": Component("scheduler", ["scheduler", "--skip-serve-logs"], env, logs),
                "dag-processor": Component("dag-processor", ["dag-processor"], env, logs),
                "triggerer": Component("triggerer", ["triggerer", "--skip-serve-logs"], env, logs),
                "api-server": Component(
                    "api-server", ["api-server", "--host", "127.0.0.1", "--port", env["AIRFLOW__API__PORT"]], env, logs
                ),
            }
            conf = json.dumps({"config_path": str(config), "store_uri": store, "run_name": RUN, "iteration": 1})
            deadline = time.monotonic() + 600
            while subprocess.run([sys.executable, "-m", "airflow", "dags", "trigger", DAG, "--run-id", RUN_ID,
                                  "--conf", conf], env=env, cwd=REPO, capture_output=True).returncode != 0:  # fmt: skip
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{DAG} could not be triggered (not parsed?); see {logs}")
                time.sleep(5)

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
                        components[name].kill()
                        summary.setdefault("faults", []).append(f"SIGKILL {name} while {task}'s job ran")
                        time.sleep(5)
                        components[name].start()
                if polls % 10 == 0:  # the Airflow CLI takes seconds; the Jobs API is polled every second
                    state = _run_state(env)
                time.sleep(1)
            summary["state"], summary["most_active_jobs_per_task"] = state, most_active
            candidates = artifacts.read_table(layout.candidates(1), "candidates").column("candidate_id").to_pylist()
            judgments = artifacts.read_table(layout.judgments(1)).num_rows
            summary["candidates"] = {"rows": len(candidates), "unique": len(set(candidates))}
            summary["judgments"] = judgments
            summary["generate_jobs"] = [jobs.status(resubmission_id(submission_id(DAG, RUN_ID, "generate"), n))
                                        for n in range(3)]  # fmt: skip
        finally:
            for component in components.values():
                component.stop()
            if head is not None:
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
