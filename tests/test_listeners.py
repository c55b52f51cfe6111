"""Local mode listens on 127.0.0.1 only: every listening socket (TCP listen, bound UDP) of the process trees srlm
starts — the embedded Ray head the operators start (with a job's driver and worker running on it), the in-process
Ray head of the vLLM / Ray Train path, and `make up` (its Ray head and its Airflow components) — is on a loopback
address. Each test stops what it started by PID."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.fixtures.live_airflow import api_server_healthy, wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Listener:
    pid: int
    process: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.process} (pid {self.pid}) on {self.ip}:{self.port}"


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listeners(processes: list[psutil.Process]) -> list[Listener]:
    """Listening TCP sockets and bound, unconnected UDP sockets of `processes`."""
    found = set()
    for proc in processes:
        try:
            name = " ".join(proc.cmdline()[:3])[:100] or proc.name()
            for conn in proc.net_connections(kind="inet"):
                listening = conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr)
                if listening and conn.laddr:
                    found.add(Listener(proc.pid, name, conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return sorted(found, key=lambda listener: (listener.pid, listener.port))


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def assert_loopback_only(found: list[Listener], expected_ports: set[int]) -> None:
    ports = {listener.port for listener in found}
    assert expected_ports <= ports, f"expected listeners on {sorted(expected_ports)}; found {[str(f) for f in found]}"
    exposed = [str(listener) for listener in found if not is_loopback(listener.ip)]
    assert exposed == [], "listening beyond loopback:\n" + "\n".join(exposed)


def stop_processes(processes: list[psutil.Process], grace_seconds: float = 15.0) -> None:
    """SIGTERM each process we saw, SIGKILL what is left after the grace period (by PID, nothing else)."""
    alive = []
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
            alive.append(proc)
    _, left = psutil.wait_procs(alive, timeout=grace_seconds)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(left, timeout=5)


def test_embedded_ray_head_and_its_jobs_listen_on_loopback_only(ray_head):
    """The head the operators start (start_local_head), with a job running a driver and an actor: GCS, raylet,
    object manager, dashboard and its agent, runtime-env agent, the job supervisor, driver and worker."""
    from srlm.orchestration.ray_jobs import RayJobs

    client = RayJobs(ray_head.address).client
    entrypoint = (
        f'{sys.executable} -c "import ray, time; ray.init(); '
        "Pinger = ray.remote(num_cpus=0)(type('Pinger', (), {'ping': lambda self: 1})); "
        "p = Pinger.remote(); ray.get(p.ping.remote()); print('LISTENERS-READY', flush=True); time.sleep(300)\""
    )
    job_id = client.submit_job(entrypoint=entrypoint)
    try:
        wait_for(
            lambda: "LISTENERS-READY" in client.get_job_logs(job_id),
            "the job's actor did not start",
            on_timeout=lambda: client.get_job_logs(job_id)[-2000:],
        )
        tree = process_tree(ray_head.pgid)
        assert any("raylet" in proc.name() for proc in tree) and len(tree) >= 6  # the whole head, not its shell
        gcs_port = int(ray_head.gcs_address.rsplit(":", 1)[1])
        dashboard_port = int(ray_head.address.rsplit(":", 1)[1])
        assert_loopback_only(listeners(tree), {gcs_port, dashboard_port})
    finally:
        client.stop_job(job_id)


IN_PROCESS_HEAD = """
import sys
import ray  # imported before connect(), as vLLM does: the loopback switch must still take effect
from srlm.generation import ray_cluster

assert ray_cluster.connect(None)
Pinger = ray.remote(num_cpus=0)(type("Pinger", (), {"ping": lambda self: 1}))
pinger = Pinger.remote()
ray.get(pinger.ping.remote())
print("LISTENERS-READY", ray.util.get_node_ip_address(), flush=True)
sys.stdin.read()  # until the test closes our stdin
ray_cluster.release()
"""


def test_in_process_ray_head_listens_on_loopback_only(tmp_path):
    """`ray_cluster.connect(None)` (vLLM engines, Ray Train without a cluster) starts a head inside its process:
    the driver's own core worker, GCS, raylet, agents and the actor's worker all listen on loopback."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log_file:
        driver = subprocess.Popen(
            [sys.executable, "-c", IN_PROCESS_HEAD], stdin=subprocess.PIPE, stdout=log_file,
            stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT), text=True, start_new_session=True,
        )  # fmt: skip
    seen: list[psutil.Process] = []
    try:
        wait_for(
            lambda: "LISTENERS-READY" in log_path.read_text() or driver.poll() is not None,
            "the in-process head did not start",
            on_timeout=lambda: log_path.read_text()[-2000:],
        )
        output = log_path.read_text()
        assert driver.poll() is None, output[-3000:]
        assert "LISTENERS-READY 127.0.0.1" in output  # the node's address is the loopback one
        seen = process_tree(driver.pid)
        assert any(proc.name() == "gcs_server" for proc in seen), [proc.name() for proc in seen]
        assert_loopback_only(listeners(seen), set())
    finally:
        with contextlib.suppress(OSError):
            driver.stdin.close()  # connect()'s release() shuts the head down
        try:
            driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        stop_processes(seen or process_tree(driver.pid))


def test_make_up_listens_on_loopback_only(tmp_path):
    """scripts/airflow_up.sh (what `make up` runs after setup), with its own ports and directories: the Ray head
    and every Airflow component listen on loopback only."""
    from srlm.orchestration.ray_head import free_port, recorded_head

    ray_temp = tempfile.mkdtemp(prefix="srlm-up-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    api_port, dashboard_port = free_port(), free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "RAY_ADDRESS"))},
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__API__PORT": str(api_port),
        "RAY_DASHBOARD_PORT": str(dashboard_port),
        "SRLM_RAY_TEMP_DIR": ray_temp,
        "SRLM_GPU_SLOTS": "1",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # no scheduled run competes for the CPUs
        "VENV": os.path.relpath(Path(sys.executable).parents[1], REPO_ROOT),  # the script puts $REPO/$VENV/bin first
    }
    log_path = tmp_path / "make-up.log"
    with open(log_path, "w") as log_file:
        script = subprocess.Popen(
            ["bash", str(REPO_ROOT / "scripts" / "airflow_up.sh")], stdout=log_file, stderr=subprocess.STDOUT,
            env=env, cwd=str(REPO_ROOT), start_new_session=True,
        )  # fmt: skip
    seen: list[psutil.Process] = []
    try:
        wait_for(
            lambda: api_server_healthy(api_port) or script.poll() is not None,
            "make up did not come up",
            on_timeout=lambda: log_path.read_text()[-3000:],
        )
        assert script.poll() is None, log_path.read_text()[-3000:]
        head = recorded_head(ray_temp)
        assert head is not None
        seen = process_tree(script.pid) + process_tree(head.pgid)
        names = " ".join(" ".join(proc.cmdline()) for proc in seen)
        for component in ("scheduler", "dag-processor", "triggerer", "api-server", "gcs_server", "raylet"):
            assert component in names, component
        gcs_port = int(head.gcs_address.rsplit(":", 1)[1])
        assert_loopback_only(listeners(seen), {api_port, dashboard_port, gcs_port})
    finally:
        head = recorded_head(ray_temp)
        seen = seen or process_tree(script.pid) + (process_tree(head.pgid) if head else [])
        stop_processes(seen, grace_seconds=30)  # the script, every Airflow component and the Ray head at once
        script.wait(timeout=30)
        if head is not None:
            head.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)
        assert not [proc.pid for proc in seen if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "127.0.0.53"])
def test_loopback_addresses_are_recognised(ip):
    assert is_loopback(ip)


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "10.1.2.3"])
def test_other_addresses_are_exposed(ip):
    assert not is_loopback(ip)
