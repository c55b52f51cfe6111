"""srlm's operators: Ray jobs, srlm steps as Ray jobs, and training steps per backend (Ray, Kubernetes, local).

Importing this package is cheap (no Ray, torch, pyarrow or Kubernetes client): DAG files import it at parse time.
KubernetesTrainingOperator lives in srlm_airflow.operators.kubernetes, imported only for that backend.
"""

from srlm_airflow.operators.ray_job import RayJobOperator
from srlm_airflow.operators.srlm_step import SrlmStep, SrlmStepOperator
from srlm_airflow.operators.training import (
    BACKENDS,
    LocalTrainingOperator,
    RayTrainingOperator,
    configured_backend,
    training_operator,
)

__all__ = [
    "BACKENDS",
    "LocalTrainingOperator",
    "RayJobOperator",
    "RayTrainingOperator",
    "SrlmStep",
    "SrlmStepOperator",
    "configured_backend",
    "training_operator",
]
