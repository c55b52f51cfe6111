"""What Airflow's ProvidersManager reads from the `apache_airflow_provider` entry point (see pyproject.toml):
srlm's connection type, extra link, trigger and config section. `package-name` must be the distribution's name."""

from __future__ import annotations

import json
from typing import Any

RAY_CONNECTION_FORM = {
    "hidden-fields": ["login", "password"],
    "relabeling": {"host": "Ray dashboard host", "port": "Jobs API port", "schema": "Scheme (http/https)"},
    "placeholders": {
        "host": "raycluster-head-svc.ray.svc",
        "port": "8265",
        "schema": "http",
        "extra": json.dumps({"address": "(optional) http://host:8265", "headers": {"Authorization": "Bearer …"},
                             "verify": True}),
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "srlm",
        "name": "srlm",
        "description": "Self-Rewarding Language Models: srlm steps as Ray jobs, training per backend, deferrable "
        "waiting in the triggerer.",
        "versions": ["0.1.0"],
        "integrations": [
            {"integration-name": "Ray Jobs API", "external-doc-url": "https://docs.ray.io/en/latest/cluster/"
             "running-applications/job-submission/index.html", "tags": ["software"]},
        ],
        "hooks": [{"integration-name": "Ray Jobs API", "python-modules": ["srlm_airflow.hooks"]}],
        "connection-types": [
            {
                "hook-class-name": "srlm_airflow.hooks.RayJobsHook",
                "connection-type": "ray",
                "hook-name": "Ray Jobs API",
                # The connection form (declared here, Airflow 3.2+, so the UI needs no hook import).
                "ui-field-behaviour": RAY_CONNECTION_FORM,
            }
        ],
        "operators": [{"integration-name": "Ray Jobs API", "python-modules": [
            "srlm_airflow.operators.ray_job", "srlm_airflow.operators.srlm_step", "srlm_airflow.operators.training",
        ]}],
        "triggers": [{"integration-name": "Ray Jobs API", "python-modules": ["srlm_airflow.triggers"]}],
        "extra-links": ["srlm_airflow.links.RayJobLink"],
        "config": {
            "srlm": {
                "description": "srlm's operators.",
                "options": {
                    "deferrable": {
                        "description": "Whether srlm's Ray and Kubernetes operators wait for their job in the "
                        "triggerer (freeing the worker slot) rather than on the worker. A task's own "
                        "`deferrable=` argument overrides it.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                },
            },
        },
    }
