#!/usr/bin/env bash
# `make up`: the embedded local deployment of srlm on this machine.
#
#   1. a local Ray head with its dashboard, so the Ray Jobs API answers on http://127.0.0.1:${RAY_DASHBOARD_PORT}
#      (every srlm step runs there as a Ray job; with no `ray_default` connection the operators use this head);
#   2. Airflow 3: what `airflow standalone` runs (scheduler, DAG processor, triggerer, API server + UI on :8080)
#      with AIRFLOW_HOME=./airflow-home, DAGs from ./dags, plugins from ./plugins, no example DAGs;
#   3. the `srlm_gpu` pool (one slot per GPU Ray can see, at least 1).
#
# Everything listens on 127.0.0.1 only (the Ray head: srlm.orchestration.ray_head; the API server: --host). The
# Airflow components are started one by one instead of with `airflow standalone`, which has no host setting for
# them, and whose scheduler and triggerer serve task logs on every interface ([::]:8793 and :8794, hard-coded in
# airflow.utils.serve_logs): tasks run on this machine and the API server reads their log files directly, so
# those log servers are not started (--skip-serve-logs).
#
# Ctrl-C stops Airflow (its whole process group), then the Ray head this script started — nothing else: no
# `ray stop`, which would end every Ray on the machine.
# Environment: AIRFLOW_HOME, AIRFLOW__API__PORT (8080), RAY_DASHBOARD_PORT (8265), SRLM_RAY_TEMP_DIR,
# SRLM_GPU_SLOTS, VENV (.venv), AIRFLOW__CORE__PARALLELISM (4).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VENV:-.venv}"
export PATH="$REPO/$VENV/bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$REPO/airflow-home}"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$REPO/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Tasks only submit Ray jobs and wait; a few LocalExecutor workers are plenty (the default starts 32 processes).
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
# The DAG files import srlm_airflow, installed into the venv with srlm (`make setup`): no PYTHONPATH needed.
export SRLM_RAY_TEMP_DIR="${SRLM_RAY_TEMP_DIR:-/tmp/srlm-ray-$(id -u)}"
RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
export RAY_JOBS_ADDRESS="http://127.0.0.1:${RAY_DASHBOARD_PORT}"
AIRFLOW_API_PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT="$AIRFLOW_API_PORT"
# Task processes reach the API server's execution API on the loopback address it listens on (the default URL
# names `localhost`, which may resolve to ::1 first).
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:${AIRFLOW_API_PORT}/execution/"
# Off by default; should someone turn the scheduler's health check on, it stays on loopback too.
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1
# A local demo: the srlm DAGs are live as soon as they are parsed (srlm_continue must be, for auto-continue).
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}"
mkdir -p "$AIRFLOW_HOME"

echo "== Ray head (Jobs API ${RAY_JOBS_ADDRESS}, temp dir ${SRLM_RAY_TEMP_DIR})"
python -m srlm.orchestration.ray_head start --dashboard-port "$RAY_DASHBOARD_PORT" --temp-dir "$SRLM_RAY_TEMP_DIR"
stop_ray() {
    python -m srlm.orchestration.ray_head stop --temp-dir "$SRLM_RAY_TEMP_DIR" || true
}
trap stop_ray EXIT

echo "== Airflow metadata database (${AIRFLOW_HOME})"
airflow db migrate >/dev/null

gpus="${SRLM_GPU_SLOTS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}"
[ "${gpus:-0}" -ge 1 ] 2>/dev/null || gpus=1
# --include-deferred: a GPU step waiting in the triggerer still holds its GPU on the Ray cluster.
airflow pools set srlm_gpu "$gpus" "srlm generation engines and trainers: one slot per GPU" --include-deferred >/dev/null
echo "== pool srlm_gpu: ${gpus} slot(s)"

cat <<MSG
== Airflow: UI on http://127.0.0.1:${AIRFLOW_API_PORT} (user 'admin'; the password is printed below and saved in
   ${AIRFLOW_HOME}/simple_auth_manager_passwords.json.generated). DAGs: srlm_seed, srlm_iteration,
   srlm_evaluate, srlm_continue. Ray dashboard: ${RAY_JOBS_ADDRESS}
MSG
# Airflow runs in its own session so that stopping it can reach every component it started (a component that
# outlives the others would keep the port and the database busy). One component exiting ends them all.
setsid bash -c '
    airflow scheduler --skip-serve-logs &
    airflow dag-processor &
    airflow triggerer --skip-serve-logs &
    airflow api-server --host 127.0.0.1 --port "$AIRFLOW__API__PORT" &
    wait -n
' &
AIRFLOW_PGID=$!
stopping=0
# SIGTERM: background jobs of a script ignore SIGINT, and every Airflow component shuts down cleanly on SIGTERM.
stop_airflow() { stopping=1; kill -TERM -- "-$AIRFLOW_PGID" 2>/dev/null || true; }
trap stop_airflow INT TERM
while [ "$stopping" = 0 ] && kill -0 "$AIRFLOW_PGID" 2>/dev/null; do wait "$AIRFLOW_PGID" || true; done
# Give Airflow 30 s to shut down cleanly (a component can hang joining a thread), then end what is left of it.
end_group() {
    local signal=$1 tries=$2
    kill "-$signal" -- "-$AIRFLOW_PGID" 2>/dev/null || return 0
    for _ in $(seq "$tries"); do kill -0 -- "-$AIRFLOW_PGID" 2>/dev/null || return 0; sleep 0.5; done
}
for _ in $(seq 60); do kill -0 -- "-$AIRFLOW_PGID" 2>/dev/null || break; sleep 0.5; done
end_group TERM 20
end_group KILL 1
