{{/* Names */}}
{{- define "srlm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "srlm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "srlm.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "srlm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "srlm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "srlm.storeSecret" -}}
{{- default (printf "%s-store" (include "srlm.fullname" .)) .Values.store.existingSecret -}}
{{- end -}}

{{- define "srlm.airflowSecret" -}}
{{- default (printf "%s-airflow" (include "srlm.fullname" .)) .Values.airflow.existingSecret -}}
{{- end -}}

{{- define "srlm.databaseSecret" -}}
{{- default (printf "%s-database" (include "srlm.fullname" .)) .Values.airflow.externalDatabase.existingSecret -}}
{{- end -}}

{{- define "srlm.rayAuthSecret" -}}
{{- default (printf "%s-ray-auth" (include "srlm.fullname" .)) .Values.ray.auth.existingSecret -}}
{{- end -}}

{{/* Ray token authentication: every Ray node and every client (the Airflow components submitting jobs). */}}
{{- define "srlm.rayAuthEnv" -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "srlm.rayAuthSecret" . }}, key: auth-token}
{{- end -}}

{{/* Ray's Python components log at WARNING: at INFO the runtime-env agent writes each job's env_vars (which can
     carry store credentials) to runtime_env_agent.log. */}}
{{- define "srlm.rayLogEnv" -}}
- name: RAY_LOGGER_LEVEL
  value: warning
{{- end -}}

{{- define "srlm.rayCluster" -}}
{{- printf "%s-ray" (include "srlm.fullname" .) -}}
{{- end -}}

{{- define "srlm.airflowImage" -}}
{{- printf "%s:%s" .Values.images.airflow.repository .Values.images.airflow.tag -}}
{{- end -}}

{{- define "srlm.workerImage" -}}
{{- printf "%s:%s" .Values.images.worker.repository .Values.images.worker.tag -}}
{{- end -}}

{{/* S3 settings every pod gets; the keys come from the store Secret (envFrom). */}}
{{- define "srlm.storeEnv" -}}
- name: AWS_REGION
  value: {{ .Values.store.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.store.region | quote }}
{{- with .Values.store.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Environment of every Airflow component. */}}
{{- define "srlm.airflowEnv" -}}
- name: AIRFLOW__CORE__EXECUTOR
  value: {{ .Values.airflow.executor | quote }}
- name: AIRFLOW__CORE__PARALLELISM
  value: {{ .Values.airflow.parallelism | quote }}
- name: AIRFLOW__CORE__LOAD_EXAMPLES
  value: "False"
- name: AIRFLOW__CORE__DAGS_FOLDER
  value: /opt/srlm/dags
- name: AIRFLOW__CORE__PLUGINS_FOLDER
  value: /opt/srlm/plugins
- name: AIRFLOW__CORE__EXECUTION_API_SERVER_URL
  value: {{ printf "http://%s-api-server:%v/execution/" (include "srlm.fullname" .) .Values.airflow.apiServer.service.port | quote }}
- name: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
  valueFrom:
    secretKeyRef: {name: {{ include "srlm.databaseSecret" . }}, key: connection}
- name: AIRFLOW__CORE__FERNET_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "srlm.airflowSecret" . }}, key: fernet-key}
- name: AIRFLOW__API_AUTH__JWT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ include "srlm.airflowSecret" . }}, key: jwt-secret}
- name: AIRFLOW__API__SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "srlm.airflowSecret" . }}, key: api-secret-key}
- name: SRLM_CONFIG
  value: /etc/srlm/config.yaml
{{- if .Values.ray.enabled }}
# The operators' `ray_default` connection: the KubeRay head's Jobs API (dashboard) service.
- name: AIRFLOW_CONN_RAY_DEFAULT
  value: {{ printf "{\"conn_type\": \"ray\", \"host\": \"%s-head-svc.%s.svc\", \"port\": 8265}" (include "srlm.rayCluster" .) .Release.Namespace | quote }}
# The Jobs API requires the cluster's token (the Ray Jobs hook sends RAY_AUTH_TOKEN).
{{ include "srlm.rayAuthEnv" . }}
{{- end }}
- name: AIRFLOW_VAR_SRLM_TRAINING_BACKEND
  value: {{ .Values.training.backend | quote }}
- name: AIRFLOW_VAR_SRLM_TRAINING_GPUS
  value: {{ .Values.training.gpus | quote }}
- name: AIRFLOW_VAR_SRLM_WORKER_IMAGE
  value: {{ include "srlm.workerImage" . | quote }}
- name: AIRFLOW_VAR_SRLM_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: AIRFLOW_VAR_SRLM_STORE_SECRET
  value: {{ include "srlm.storeSecret" . | quote }}
{{ include "srlm.storeEnv" . }}
{{- end -}}

{{/* An Airflow component's pod: waits for the migrations, then runs `airflow <command>`. */}}
{{- define "srlm.airflowPod" -}}
serviceAccountName: {{ include "srlm.serviceAccountName" .root }}
{{- with .root.Values.images.pullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsUser: 50000
  fsGroup: 0
initContainers:
  - name: wait-for-migrations
    image: {{ include "srlm.airflowImage" .root }}
    imagePullPolicy: {{ .root.Values.images.airflow.pullPolicy }}
    args: ["airflow", "db", "check-migrations", "--migration-wait-timeout=600"]
    env: {{- include "srlm.airflowEnv" .root | nindent 6 }}
containers:
  - name: {{ .component }}
    image: {{ include "srlm.airflowImage" .root }}
    imagePullPolicy: {{ .root.Values.images.airflow.pullPolicy }}
    args: {{ toJson .args }}
    env: {{- include "srlm.airflowEnv" .root | nindent 6 }}
    envFrom:
      - secretRef: {name: {{ include "srlm.storeSecret" .root }}}
    {{- with .ports }}
    ports: {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .probe }}
    readinessProbe: {{- toYaml . | nindent 6 }}
    {{- end }}
    resources: {{- toYaml .resources | nindent 6 }}
    volumeMounts:
      - {name: srlm-config, mountPath: /etc/srlm, readOnly: true}
volumes:
  - name: srlm-config
    configMap: {name: {{ include "srlm.fullname" .root }}-config}
{{- end -}}
