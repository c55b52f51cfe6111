"""KubernetesTrainingOperator: a training step as a pod from the worker image (the `kubernetes` training backend).

A KubernetesPodOperator configured when the DAG is parsed; only what depends on the run (the step's command with
its resolved spec, the store credentials, the GPU limit) is filled in from the rendered fields when the task runs.
The provider's own machinery does the rest: it reattaches to a running pod on retry (`durable`), reads the step's
result from the xcom sidecar, and — deferrable by default, like the Ray operators — waits in the triggerer.

Store credentials come from a Kubernetes Secret when `store_secret` names one, so they never appear in the pod
spec; otherwise the AWS connection's values are passed as plain pod env vars.

Importing this module needs apache-airflow-providers-cncf-kubernetes (`pip install srlm[k8s]`);
srlm_airflow.operators.training imports it only for the kubernetes backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s
except ImportError as exc:
    raise ImportError(
        "srlm_training_backend=kubernetes needs the Kubernetes provider: pip install 'srlm[k8s]' "
        "(apache-airflow-providers-cncf-kubernetes, in the Airflow image)"
    ) from exc

from airflow.sdk.exceptions import AirflowFailException

from srlm_airflow.operators.ray_job import default_deferrable
from srlm_airflow.operators.srlm_step import STEP_TEMPLATE_FIELDS, STEP_TEMPLATE_RENDERERS, SrlmStep
from srlm_airflow.operators.training import TRAINING_GPUS, TRAINING_UI_COLOR, gpu_count, training_backend
from srlm_airflow.store_credentials import store_environment

if TYPE_CHECKING:
    from airflow.sdk import Context


class KubernetesTrainingOperator(SrlmStep, KubernetesPodOperator):
    """Run a training step in a pod (see SrlmStep for the step parameters).

    :param training_gpus: GPUs for the trainer (templated; default Variable `srlm_training_gpus`, else 0).
    :param image: worker image (templated; Variable `srlm_worker_image`).
    :param namespace: Kubernetes namespace (templated; Variable `srlm_namespace`, else "default").
    :param store_secret: Kubernetes Secret holding AWS_* keys for the store (templated; Variable
        `srlm_store_secret`); empty → the AWS connection's values are passed as plain pod env vars.
    :param aws_conn_id: the AWS connection used when there is no `store_secret` (None: pass nothing).
    :param kubernetes_conn_id: the provider's connection; None uses in-cluster config.
    Other KubernetesPodOperator arguments (node_selector, tolerations, …) pass through.
    """

    template_fields: Sequence[str] = (
        *KubernetesPodOperator.template_fields,
        *STEP_TEMPLATE_FIELDS,
        "training_gpus",
        "store_secret",
    )
    template_fields_renderers = {**KubernetesPodOperator.template_fields_renderers, **STEP_TEMPLATE_RENDERERS}
    ui_color = TRAINING_UI_COLOR

    def __init__(
        self,
        *,
        step: str,
        plan: Any,
        inputs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        iteration: int | str | None = None,
        return_key: str = "uri",
        python: str = "python",
        training_gpus: int | str = TRAINING_GPUS,
        image: str = "{{ var.value.get('srlm_worker_image', 'srlm-worker:cuda') }}",
        namespace: str = "{{ var.value.get('srlm_namespace', 'default') }}",
        store_secret: str = "{{ var.value.get('srlm_store_secret', '') }}",
        aws_conn_id: str | None = "aws_default",
        kubernetes_conn_id: str | None = "kubernetes_default",
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", f"srlm-{step}")
        kwargs.setdefault("labels", {"app.kubernetes.io/name": "srlm", "srlm/step": step})
        kwargs.setdefault("do_xcom_push", True)
        kwargs.setdefault("get_logs", True)
        kwargs.setdefault("durable", True)  # a retry reattaches to the pod of the previous try
        kwargs.setdefault("on_finish_action", "delete_succeeded_pod")
        super().__init__(
            image=image,
            namespace=namespace,
            kubernetes_conn_id=kubernetes_conn_id,
            deferrable=default_deferrable() if deferrable is None else deferrable,
            **kwargs,
        )
        self.init_step(step=step, plan=plan, inputs=inputs, options=options, iteration=iteration,
                       return_key=return_key, python=python)
        self.training_gpus = training_gpus
        self.store_secret = store_secret
        self.aws_conn_id = aws_conn_id

    def configure_pod(self) -> None:
        """Fill in what depends on the run, from the rendered template fields (called before the pod is built)."""
        if training_backend(self.plan, self.step) == "ray":
            raise AirflowFailException(
                f"{self.task_id}: {self.step}.backend is ray, but the kubernetes training backend runs one pod; set "
                f"{self.step}.backend: local (accelerate inside the pod, {self.step}.num_processes = its GPUs)"
            )
        self.cmds = self.step_spec().command(self.python)
        env = {"PYTHONUNBUFFERED": "1"}
        if self.store_secret:
            self.env_from = [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=self.store_secret))]
        else:
            env.update(store_environment(self.aws_conn_id))
        self.env_vars = [k8s.V1EnvVar(name=name, value=value) for name, value in env.items()]
        gpus = gpu_count(self.training_gpus, self.task_id)
        if gpus:
            self.container_resources = k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": str(gpus)})
        self.namespace = self.namespace or "default"

    def execute(self, context: Context) -> Any:
        self.configure_pod()
        self.log.info("training step %s in a pod of %s (namespace %s)", self.step, self.image, self.namespace)
        result = super().execute(context)  # deferrable: raises TaskDeferred, resumed in trigger_reentry
        return self.result_value(result if isinstance(result, dict) else None, f"pod {self.name}")

    def trigger_reentry(self, context: Context, event: dict[str, Any]) -> Any:
        result = super().trigger_reentry(context, event)
        return self.result_value(result if isinstance(result, dict) else None, f"pod {event.get('name')}")
