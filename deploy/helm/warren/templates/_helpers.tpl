{{/* Names, labels and the pieces every warren container shares. */}}

{{- define "warren.fullname" -}}
{{- printf "%s-warren" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "warren.labels" -}}
app.kubernetes.io/name: warren
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "warren.selector" -}}
app.kubernetes.io/name: warren
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The exchange tasks are routed through by model name (topology.tasks_exchange). */}}
{{- define "warren.tasksExchange" -}}warren.tasks{{- end -}}

{{/* A model's name as a Kubernetes name part: lower case, [a-z0-9-]. */}}
{{- define "warren.modelSlug" -}}
{{- regexReplaceAll "[^a-z0-9-]+" (lower .) "-" | trunc 30 | trimAll "-" -}}
{{- end -}}

{{- define "warren.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "warren.fullname" .)) -}}
{{- end -}}

{{- define "warren.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "warren.cudaImage" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.cudaTag | default (printf "%s-cuda" .Chart.AppVersion)) -}}
{{- end -}}

{{/* Volumes every warren pod mounts: its configuration file and the secret. */}}
{{- define "warren.volumes" -}}
- name: config
  configMap:
    name: {{ include "warren.fullname" . }}-config
- name: secrets
  secret:
    secretName: {{ include "warren.secretName" . }}
{{- end -}}

{{- define "warren.volumeMounts" -}}
- name: config
  mountPath: /etc/warren/warren.toml
  subPath: warren.toml
  readOnly: true
- name: secrets
  mountPath: /etc/warren/secret
  readOnly: true
{{- end -}}

{{/* Environment every warren process shares: the broker URL is read from the mounted secret. */}}
{{- define "warren.env" -}}
- name: WARREN__BROKER__URL_FILE
  value: /etc/warren/secret/amqp-url
# The queue bound policies and drain rates (topology.queue_bound).
- name: WARREN__BROKER__MANAGEMENT_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "warren.secretName" . }}
      key: management-url
{{- end -}}

{{- define "warren.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
{{- end -}}

{{- define "warren.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The models claim's name. */}}
{{- define "warren.modelClaim" -}}
{{- .Values.modelStore.existingClaim | default (printf "%s-models" (include "warren.fullname" .)) -}}
{{- end -}}

{{/*
A worker's shutdown grace in ms (its spec's shutdownGraceMs, 0 included; 120000,
limits.default_timeout_ms, for values reused from a release before the key).
*/}}
{{- define "warren.workerGraceMs" -}}
{{- if hasKey . "shutdownGraceMs" }}{{ .shutdownGraceMs | int }}{{ else }}120000{{ end -}}
{{- end }}
