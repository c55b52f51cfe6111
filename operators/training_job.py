"""TrainingJobOperator: a training step (seed SFT, DPO) on the backend the deployment chose.

`training_backend` (templated; default: Airflow Variable `srlm_training_backend`, else "ray"):
- ray: a Ray job reserving `training_gpus` GPUs for the entrypoint (the trainer runs in that process), with all the
  reattach / resubmit / stop behaviour of RayJobOperator;
- kubernetes: a pod from the worker image through the cncf.kubernetes provider's KubernetesPodOperator (which
  reattaches to a running pod on retry); store credentials come from a Kubernetes Secret when `store_secret`
  names one, so they never appear in the pod spec;
- local: a subprocess on the Airflow worker itself (single machine, no Ray).

All three run the same `python -m srlm.orchestration.task STEP --spec JSON` and return the checkpoint URI.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Sequence

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.srlm_step import SrlmStepOperator
from srlm.orchestration.result import PERMANENT_FAILURE_EXIT_CODE

if TYPE_CHECKING:
    from airflow.sdk import Context

BACKENDS = ("ray", "kubernetes", "local")
KUBERNETES_PROVIDER_HINT = (
    "srlm_training_backend=kubernetes needs the Kubernetes provider: "
    "pip install apache-airflow-providers-cncf-kubernetes (in the Airflow image)"
)


class TrainingJobOperator(SrlmStepOperator):
    """Run a training step as a Ray job with GPUs, a Kubernetes pod, or a local process.

    :param training_backend: ray | kubernetes | local (templated).
    :param training_gpus: GPUs for the trainer (templated; default Variable `srlm_training_gpus`, else 0).
    :param image: worker image for the kubernetes backend (templated; Variable `srlm_worker_image`).
    :param namespace: Kubernetes namespace (templated; Variable `srlm_namespace`, else "default").
    :param store_secret: Kubernetes Secret holding AWS_* keys for the store (templated; Variable
        `srlm_store_secret`); empty → the AWS connection's values are passed as plain pod env vars.
    :param kubernetes_conn_id: the provider's connection; None uses in-cluster config.
    :param pod_kwargs: extra KubernetesPodOperator arguments (node_selector, tolerations, …).
    """

    template_fields: Sequence[str] = (
        *SrlmStepOperator.template_fields,
        "training_backend",
        "training_gpus",
        "image",
        "namespace",
        "store_secret",
    )
    ui_color = "#f6d6ad"

    def __init__(
        self,
        *,
        training_backend: str = "{{ var.value.get('srlm_training_backend', 'ray') }}",
        training_gpus: int | str = "{{ var.value.get('srlm_training_gpus', 0) }}",
        image: str = "{{ var.value.get('srlm_worker_image', 'srlm-worker:cuda') }}",
        namespace: str = "{{ var.value.get('srlm_namespace', 'default') }}",
        store_secret: str = "{{ var.value.get('srlm_store_secret', '') }}",
        kubernetes_conn_id: str | None = "kubernetes_default",
        pod_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.training_backend = training_backend
        self.training_gpus = training_gpus
        self.image = image
        self.namespace = namespace
        self.store_secret = store_secret
        self.kubernetes_conn_id = kubernetes_conn_id
        self.pod_kwargs = dict(pod_kwargs or {})
        self._pod_operator: Any = None
        self._process: Any = None

    @property
    def backend(self) -> str:
        backend = str(self.training_backend or "ray").strip().lower()
        if backend not in BACKENDS:
            raise AirflowFailException(
                f"{self.task_id}: srlm_training_backend={backend!r}; expected one of {', '.join(BACKENDS)}"
            )
        return backend

    @property
    def gpus(self) -> int:
        try:
            return int(float(self.training_gpus or 0))
        except ValueError:
            raise AirflowFailException(f"{self.task_id}: training_gpus must be a number, got {self.training_gpus!r}")

    def execute(self, context: Context) -> Any:
        backend = self.backend
        self.log.info("training step %s on backend %s with %d GPU(s)", self.step, backend, self.gpus)
        if backend == "kubernetes":
            return self._execute_pod(context)
        if backend == "local":
            return self._execute_local(context)
        self.entrypoint_num_gpus = self.gpus or None
        return super().execute(context)

    def on_kill(self) -> None:
        if self._process is not None:
            self.log.info("task killed: stopping the local training process")
            self._process.stop()
        if self._pod_operator is not None:
            self._pod_operator.on_kill()
        super().on_kill()

    # -- kubernetes ---------------------------------------------------------------------------------------------
    def pod_operator(self, context: Context) -> Any:
        """The KubernetesPodOperator this task runs (built lazily: the provider is optional)."""
        try:
            from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
            from kubernetes.client import models as k8s
        except ImportError as exc:
            raise AirflowFailException(KUBERNETES_PROVIDER_HINT) from exc
        from operators.connections import store_environment

        env_from = None
        env_vars: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
        if self.store_secret:
            env_from = [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=self.store_secret))]
        elif self.aws_conn_id is not None:
            env_vars.update(store_environment(self.aws_conn_id))
        resources = None
        if self.gpus:
            resources = k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": str(self.gpus)})
        kwargs = {
            "name": f"srlm-{self.step}",
            "namespace": self.namespace or "default",
            "image": self.image,
            "cmds": self.step_spec().command(self.python),
            "env_vars": env_vars,
            "env_from": env_from,
            "container_resources": resources,
            "labels": {"app.kubernetes.io/name": "srlm", "srlm/step": self.step},
            "do_xcom_push": True,
            "get_logs": True,
            "reattach_on_restart": True,
            "on_finish_action": "delete_succeeded_pod",
            "kubernetes_conn_id": self.kubernetes_conn_id,
            **self.pod_kwargs,
        }
        return KubernetesPodOperator(task_id=self.task_id, **kwargs)

    def _execute_pod(self, context: Context) -> Any:
        self._pod_operator = self.pod_operator(context)
        result = self._pod_operator.execute(context)
        return self.result_value(result if isinstance(result, dict) else None, self._pod_operator.name)

    # -- local --------------------------------------------------------------------------------------------------
    def _execute_local(self, context: Context) -> Any:
        from operators.connections import store_environment
        from srlm.orchestration.local_process import LocalStepProcess

        env = store_environment(self.aws_conn_id) if self.aws_conn_id is not None else {}
        self._process = LocalStepProcess(self.step_spec().command(sys.executable), env=env)
        outcome = self._process.run(lambda line: self.log.info("[%s] %s", self.step, line))
        self._process = None
        if outcome.returncode == PERMANENT_FAILURE_EXIT_CODE:
            raise AirflowFailException(f"{self.step} failed permanently (exit code {outcome.returncode}); not retried")
        if outcome.returncode != 0:
            raise AirflowException(f"{self.step} exited with code {outcome.returncode}")
        return self.result_value(outcome.result, "local process")
