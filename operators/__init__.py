"""Airflow operators for srlm: Ray jobs, srlm steps as Ray jobs, and training jobs (Ray, Kubernetes or local).

Importing this package is cheap (no Ray, torch or pyarrow): DAG files import it at parse time.
"""

from operators.ray_job import RayJobOperator
from operators.srlm_step import SrlmStepOperator
from operators.training_job import TrainingJobOperator

__all__ = ["RayJobOperator", "SrlmStepOperator", "TrainingJobOperator"]
