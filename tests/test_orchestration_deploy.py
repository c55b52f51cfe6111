"""Deployment files: the Helm chart lints and renders offline (helm-sdkpy, when a Python with it is available), the
Dockerfiles copy only what exists, and `make up`'s script is valid shell."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "helm" / "srlm"

LINT_SCRIPT = """
import asyncio, json, sys
import helm_sdkpy
print("LINT " + json.dumps(asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(sys.argv[1]))))
"""


def helm_python() -> str | None:
    """An interpreter that can import helm_sdkpy: $SRLM_HELM_PYTHON, /tmp/helmvenv, or this one (scripts/setup.sh
    installs it into .venv)."""
    candidates = [os.environ.get("SRLM_HELM_PYTHON"), "/tmp/helmvenv/bin/python", sys.executable]
    for candidate in filter(None, candidates):
        if (
            Path(candidate).exists()
            and subprocess.run([candidate, "-c", "import helm_sdkpy"], capture_output=True, timeout=60).returncode == 0
        ):
            return candidate
    return None


@pytest.fixture(scope="module")
def lint(tmp_path_factory):
    python = helm_python()
    if python is None:
        pytest.skip(
            "helm-sdkpy is not installed (make setup installs it: pip install --ignore-requires-python helm-sdkpy)"
        )

    def run(overrides: dict) -> dict:
        """Lint (which renders every template) a copy of the chart whose values.yaml has `overrides` merged in."""
        chart = tmp_path_factory.mktemp("chart") / "srlm"
        shutil.copytree(CHART, chart)
        values = yaml.safe_load((chart / "values.yaml").read_text())
        (chart / "values.yaml").write_text(yaml.safe_dump(_merge(values, overrides)))
        done = subprocess.run([python, "-c", LINT_SCRIPT, str(chart)], capture_output=True, text=True, timeout=300)
        lines = [line for line in done.stdout.splitlines() if line.startswith("LINT ")]
        assert lines, done.stdout[-2000:] + done.stderr[-2000:]
        result = json.loads(lines[-1][len("LINT ") :])
        result["stderr"] = done.stderr
        return result

    return run


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def lint_errors(result: dict) -> list:
    return [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= 3]


def render_warnings(result: dict) -> list[str]:
    """Lint renders templates leniently: `required` and `fail` are logged (WARN / "funcMap fail"), not errors."""
    return [line for line in result["stderr"].splitlines() if " WARN " in line or "funcMap fail" in line]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "training": {"backend": "kubernetes", "gpus": 2, "nodeSelector": {"gpu": "a100"}},
            "store": {"existingSecret": "srlm-s3", "endpointUrl": "http://minio:9000"},
            "airflow": {"externalDatabase": {"existingSecret": "airflow-db"}, "existingSecret": "airflow-keys"},
            "postgresql": {"enabled": False},
            "ray": {"enabled": False},
            "images": {"pullSecrets": [{"name": "registry"}]},
        },
        {
            "store": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "example"},
            "srlmConfig": {"store": {"uri": "s3://x/y"}},
        },
        {"ray": {"auth": {"existingSecret": "ray-token"}, "autoscaling": False}},
    ],
    ids=["defaults", "kubernetes-training-external-services", "static-credentials", "ray-token-secret"],
)
def test_helm_chart_lints_and_renders(lint, overrides):
    result = lint(overrides)
    assert result["Errors"] is None and lint_errors(result) == [], result
    assert render_warnings(result) == []


def test_helm_chart_refuses_a_deployment_without_a_database(lint):
    result = lint({"postgresql": {"enabled": False}})
    assert any("Airflow needs a metadata database" in line for line in render_warnings(result)), result


def test_ray_token_auth_reaches_every_ray_node_and_client():
    """Token authentication on a cluster: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the Secret in the head, the
    GPU workers, the autoscaler sidecar and every Airflow component (which submit the Ray jobs)."""
    templates = CHART / "templates"
    helpers = (templates / "_helpers.tpl").read_text()
    auth_env = re.search(r'define "srlm.rayAuthEnv".*?end -', helpers, re.S).group(0)
    assert "RAY_AUTH_MODE" in auth_env and "value: token" in auth_env
    assert re.search(
        r"RAY_AUTH_TOKEN\s+valueFrom:\s+secretKeyRef: \{name: \{\{ include \"srlm.rayAuthSecret\"", auth_env
    )
    airflow_env = re.search(r'define "srlm.airflowEnv".*?end -', helpers, re.S).group(0)
    assert 'include "srlm.rayAuthEnv"' in airflow_env
    raycluster = (templates / "raycluster.yaml").read_text()
    head, workers = raycluster.split("workerGroupSpecs:")
    assert 'include "srlm.rayAuthEnv"' in head.split("headGroupSpec:")[1]  # the head container
    assert 'include "srlm.rayAuthEnv"' in head.split("headGroupSpec:")[0]  # the autoscaler sidecar
    assert 'include "srlm.rayAuthEnv"' in workers
    secret = (templates / "secret-ray-auth.yaml").read_text()
    assert "auth-token: {{ randAlphaNum 64 | b64enc }}" in secret and "lookup" in secret  # kept on upgrade


def test_nothing_but_the_api_server_is_meant_to_leave_the_cluster():
    """Every Service the chart defines (and the KubeRay head Service) is ClusterIP; the API server's type is the only
    one a user sets."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["airflow"]["apiServer"]["service"]["type"] == "ClusterIP"
    for template in sorted((CHART / "templates").glob("*.yaml")):
        text = template.read_text()
        assert "LoadBalancer" not in text and "NodePort" not in text and "hostNetwork" not in text, template.name
        for service in re.findall(r"kind: Service\n.*?(?=\n---|\Z)", text, re.S):
            types = re.findall(r"^  type: (.+)$", service, re.M)
            assert types in ([], ["{{ .Values.airflow.apiServer.service.type }}"]), (template.name, types)
    assert re.search(
        r"headGroupSpec:\n    serviceType: ClusterIP\n", (CHART / "templates" / "raycluster.yaml").read_text()
    )


DOCKERFILES = sorted((REPO_ROOT / "docker").glob("Dockerfile.*[!e]"))  # not the .dockerignore files


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_copy_only_what_the_repository_has(dockerfile):
    sources = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", line.strip())
        if match:
            sources += match.group(1).split()
    assert sources, f"{dockerfile.name} copies nothing"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text()
    for source in sources:
        top = source.split("/")[0]
        assert f"!{top}" in ignore, f"{dockerfile.name}.dockerignore leaves {top} out of the build context"


def test_make_up_script_is_valid_bash():
    script = REPO_ROOT / "scripts" / "airflow_up.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "ray_head start" in text and "pools set srlm_gpu" in text
    # The components `airflow standalone` would run, each on loopback: the API server with --host, the scheduler and
    # triggerer without their log servers (which bind every interface, with no host setting).
    assert "airflow api-server --host 127.0.0.1" in text and "export AIRFLOW__API__HOST=127.0.0.1" in text
    assert "airflow scheduler --skip-serve-logs" in text and "airflow triggerer --skip-serve-logs" in text
    assert "airflow dag-processor" in text and not re.search(r"^[^#]*airflow standalone", text, re.M)
    assert "PYTHONPATH" not in text.replace("no PYTHONPATH", "")  # the DAGs import the installed srlm_airflow
    # Deferred GPU steps still hold their GPU on Ray: the pool must count them (here and in the chart's migrate job).
    assert "--include-deferred" in text
    assert "--include-deferred" in (CHART / "templates" / "airflow-migrate-job.yaml").read_text()


def test_airflow_image_installs_srlm_airflow_instead_of_putting_the_repository_on_the_path():
    text = (REPO_ROOT / "docker" / "Dockerfile.airflow").read_text()
    assert "PYTHONPATH" not in text
    assert "pip install --no-deps /opt/srlm" in text and "import srlm_airflow" in text
