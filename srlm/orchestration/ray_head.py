"""The embedded local Ray head: started with its dashboard so the Jobs API works, found again, stopped by its pid.

`make up` starts one (scripts/airflow_up.sh → `python -m srlm.orchestration.ray_head start`); the operators fall back
to it when no `ray` connection is configured, starting it on demand if nothing answers on its port. The head runs
in its own session, so stopping it signals exactly the processes it started and never another Ray on the machine
(`ray stop` would kill every Ray process of the user).

Jobs submitted to it run `python …` through the head's PATH, which starts with this interpreter's directory, so a
local head runs jobs with the same virtual environment as the Airflow worker that started it.

A local head listens on 127.0.0.1 only (every Ray process: GCS, raylet, object manager, dashboard and its agent,
runtime-env agent, metrics, client server, workers). Ray 2.60 rewrites `--node-ip-address=127.0.0.1` to the
machine's routable address (`services.resolve_ip_for_localhost`) unless `ray_constants.ENABLE_RAY_CLUSTER` is off;
with it off, the node IP is the loopback address and Ray's gRPC servers and agents bind that address alone. Its
switch is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (named for the platforms where it defaults off): it also makes
`ray start --address` refuse to join a second node, which a local head never has. `LOOPBACK_RAY_ENV` holds it, for
the head started here and for the in-process head of `srlm.generation.ray_cluster`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from srlm.errors import SrlmError

log = logging.getLogger(__name__)

DEFAULT_DASHBOARD_PORT = 8265
# Unix socket paths under the temp dir must stay short (~107 bytes), so the default is a short absolute path.
DEFAULT_TEMP_DIR = os.environ.get("SRLM_RAY_TEMP_DIR", f"/tmp/srlm-ray-{os.getuid()}")
STATE_FILE = "srlm-head.json"
LOOPBACK_IP = "127.0.0.1"
# Single-node Ray on the loopback address (see the module docstring); read by Ray when `ray` is first imported.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Ray's own Python components (runtime-env agent, dashboard, job supervisor) log at WARNING: at INFO the runtime-env
# agent writes every job's runtime env, env_vars included, to runtime_env_agent.log ("Creating runtime env: …"),
# and the operators hand a job its store credentials through env_vars (tests/test_secret_scanning.py).
RAY_COMPONENT_LOG_LEVEL = "warning"


class RayHeadError(SrlmError):
    """The local Ray head cannot be started or reached."""


@dataclass
class LocalRayHead:
    address: str  # Jobs API (dashboard) URL
    gcs_address: str
    pgid: int
    temp_dir: str
    log_path: str

    def stop(self, grace_seconds: float = 10.0) -> None:
        stop_process_group(self.pgid, grace_seconds)
        with contextlib.suppress(FileNotFoundError):
            (Path(self.temp_dir) / STATE_FILE).unlink()


def local_address(port: int = DEFAULT_DASHBOARD_PORT) -> str:
    return f"http://{LOOPBACK_IP}:{port}"


def jobs_api_ready(address: str, timeout: float = 2.0) -> bool:
    """True when a Ray Jobs API answers at `address` (checked over HTTP, without importing Ray).

    A cluster with token authentication (Ray's default once ~/.ray/auth_token exists) answers 401/403 to this
    unauthenticated probe: it is up, and JobSubmissionClient sends the token itself.
    """
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout) as response:
            return response.status == 200 and "ray_version" in json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code in (401, 403)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port() -> int:
    """A free TCP port from the ephemeral range (outside Ray's default worker port range 10002-19999)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_IP, 0))
        return sock.getsockname()[1]


def start_local_head(
    *,
    dashboard_port: int = DEFAULT_DASHBOARD_PORT,
    gcs_port: int | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    temp_dir: str = DEFAULT_TEMP_DIR,
    isolated_ports: bool = True,
    ready_timeout: float = 180.0,
    cwd: str | None = None,
) -> LocalRayHead:
    """Start `ray start --head --block` in its own session, listening on 127.0.0.1 only, and wait until the Jobs
    API answers.

    `isolated_ports` (default) picks free ports for every other fixed-port component (GCS, client server, dashboard
    agent, …): the embedded head is reached only through its Jobs API, and fixed defaults (6379, 10001, 52365)
    collide with any other Ray on the machine. The dashboard port must lie outside Ray's worker port range
    (10002-19999).
    """
    if 10002 <= dashboard_port <= 19999:
        raise RayHeadError(f"dashboard port {dashboard_port} is inside Ray's worker port range 10002-19999")
    temp = Path(temp_dir)
    temp.mkdir(parents=True, exist_ok=True)
    gcs_port = gcs_port or (free_port() if isolated_ports else 6379)
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={LOOPBACK_IP}",
        "--include-dashboard=true",
        f"--dashboard-host={LOOPBACK_IP}",
        f"--dashboard-port={dashboard_port}",
        f"--port={gcs_port}",
        f"--temp-dir={temp.resolve()}",
        "--disable-usage-stats",
    ]
    if isolated_ports:
        cmd += [
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    env = dict(os.environ)
    # Jobs run `python`: make that this interpreter (the venv), whatever PATH the caller had.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.update(LOOPBACK_RAY_ENV)
    env.setdefault("RAY_LOGGER_LEVEL", RAY_COMPONENT_LOG_LEVEL)
    log_path = temp / f"head-{dashboard_port}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    address = local_address(dashboard_port)
    head = LocalRayHead(address, f"{LOOPBACK_IP}:{gcs_port}", proc.pid, str(temp.resolve()), str(log_path))
    deadline = time.monotonic() + ready_timeout
    while not jobs_api_ready(address):
        if proc.poll() is not None:
            raise RayHeadError(f"ray start exited with code {proc.returncode}; see {log_path}: {_tail(log_path)}")
        if time.monotonic() > deadline:
            head.stop()
            raise RayHeadError(f"Ray Jobs API did not answer at {address} within {ready_timeout:.0f}s; see {log_path}")
        time.sleep(0.5)
    (temp / STATE_FILE).write_text(json.dumps(asdict(head)))
    log.info("local Ray head ready: Jobs API %s, GCS %s (process group %d)", address, head.gcs_address, head.pgid)
    return head


def ensure_local_head(
    dashboard_port: int = DEFAULT_DASHBOARD_PORT, temp_dir: str = DEFAULT_TEMP_DIR, **start_kwargs
) -> str:
    """The Jobs API address of the local head, starting one if nothing answers (serialised by a file lock)."""
    address = local_address(dashboard_port)
    if jobs_api_ready(address):
        return address
    from filelock import FileLock

    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(temp_dir) / "start.lock")):  # two tasks asking at once start one head
        if not jobs_api_ready(address):
            log.info("no Ray Jobs API at %s: starting a local Ray head", address)
            start_local_head(dashboard_port=dashboard_port, temp_dir=temp_dir, **start_kwargs)
    return address


def recorded_head(temp_dir: str = DEFAULT_TEMP_DIR) -> LocalRayHead | None:
    path = Path(temp_dir) / STATE_FILE
    if not path.exists():
        return None
    return LocalRayHead(**json.loads(path.read_text()))


def stop_process_group(pgid: int, grace_seconds: float = 10.0) -> None:
    """SIGTERM the group, then SIGKILL what is left after the grace period."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        # A leader that is our child and has exited stays a zombie (and the group alive to killpg) until reaped.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srlm.orchestration.ray_head", description="Start, stop or check the embedded local Ray head."
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dashboard-port", type=int, default=DEFAULT_DASHBOARD_PORT, help="Jobs API / dashboard port.")
    parser.add_argument("--temp-dir", default=DEFAULT_TEMP_DIR, help="Ray temp dir (keep the path short).")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may schedule (default: all).")
    parser.add_argument("--num-gpus", type=int, default=None, help="GPUs Ray may schedule (default: detected).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    address = local_address(args.dashboard_port)
    if args.action == "start":
        if jobs_api_ready(address):
            print(f"Ray Jobs API already answers at {address}")
            return 0
        head = start_local_head(
            dashboard_port=args.dashboard_port, temp_dir=args.temp_dir, num_cpus=args.num_cpus, num_gpus=args.num_gpus
        )
        print(f"Ray head started: Jobs API {head.address}, GCS {head.gcs_address} (logs: {head.log_path})")
        return 0
    if args.action == "stop":
        head = recorded_head(args.temp_dir)
        if head is None:
            print(f"no Ray head recorded under {args.temp_dir}; nothing stopped")
            return 0
        head.stop()
        print(f"stopped the Ray head at {head.address} (process group {head.pgid})")
        return 0
    ready = jobs_api_ready(address)
    print(f"Ray Jobs API at {address}: {'ready' if ready else 'not answering'}")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
