{{/*
One worker Deployment, its KEDA ScaledObject on its own queue, and its PodDisruptionBudget.
Called with a dict: root (the chart's context), model (the model's name; "" for the embedder),
spec (its values), role ("generate" or "embed"), queue (the queue it consumes).
*/}}
{{- define "warren.worker" -}}
{{- $root := .root -}}
{{- $spec := .spec -}}
{{- $name := printf "%s-worker-%s" (include "warren.fullname" $root) (ternary "embed" (include "warren.modelSlug" .model) (eq .role "embed")) -}}
{{- $component := ternary "embedder" "worker" (eq .role "embed") -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "warren.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
    warren.dev/model: {{ include "warren.modelSlug" (.model | default "embed") }}
spec:
  # No `replicas`: KEDA owns it (from zero when the queue is empty).
  selector:
    matchLabels:
      {{- include "warren.selector" $root | nindent 6 }}
      app.kubernetes.io/component: {{ $component }}
      warren.dev/model: {{ include "warren.modelSlug" (.model | default "embed") }}
  template:
    metadata:
      labels:
        {{- include "warren.selector" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $component }}
        warren.dev/model: {{ include "warren.modelSlug" (.model | default "embed") }}
      annotations:
        {{- if .model }}
        # The model's name as requests give it (the label above is a Kubernetes-safe form):
        # Prometheus' `model` target label comes from here (docs: operations/metrics.md).
        warren.dev/model-name: {{ .model | quote }}
        {{- end }}
        checksum/config: {{ $root.Values.config | sha256sum }}
        # Restart on new credentials (a Secret of the chart's own; not for existingSecret).
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        prometheus.io/scrape: "true"
        prometheus.io/port: "9090"
        prometheus.io/path: /metrics
    spec:
      # Above worker.shutdown_grace_ms + up to 5 s to cancel the consumer, 5 s to give back
      # what is left and 5 s for the broker's close-ok + the trace exporter's last send (up to
      # 10 s): tasks in flight finish, the rest is requeued.
      terminationGracePeriodSeconds: {{ add (div (include "warren.workerGraceMs" $spec) 1000) 30 }}
      securityContext:
        {{- include "warren.podSecurity" $root | nindent 8 }}
      {{- if $spec.gpu }}
      nodeSelector:
        {{- toYaml $root.Values.gpuNodeSelector | nindent 8 }}
      tolerations:
        {{- toYaml $root.Values.gpuTolerations | nindent 8 }}
      {{- end }}
      initContainers:
        # The model may still be on its way (the fetch Job): wait rather than crash-loop.
        - name: wait-for-model
          image: {{ ternary (include "warren.cudaImage" $root) (include "warren.image" $root) (eq $spec.gpu true) }}
          command: ["/bin/sh", "-c", "until [ -s /models/{{ $spec.file }} ]; do echo waiting for /models/{{ $spec.file }}; sleep 5; done"]
          securityContext:
            {{- include "warren.containerSecurity" $root | nindent 12 }}
          volumeMounts:
            - name: models
              mountPath: /models
              readOnly: true
      containers:
        - name: worker
          image: {{ ternary (include "warren.cudaImage" $root) (include "warren.image" $root) (eq $spec.gpu true) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["worker", "--config", "/etc/warren/warren.toml"]
          env:
            {{- include "warren.env" $root | nindent 12 }}
            - name: WARREN__METRICS__LISTEN
              value: 0.0.0.0:9090
            - name: WARREN__ENGINE__MODEL_PATH
              value: /models/{{ $spec.file }}
            - name: WARREN__ENGINE__SLOTS
              value: {{ $spec.slots | quote }}
            - name: WARREN__WORKER__SHUTDOWN_GRACE_MS
              value: {{ include "warren.workerGraceMs" $spec | quote }}
            - name: WARREN__ENGINE__N_GPU_LAYERS
              value: {{ ternary "99" "0" (eq $spec.gpu true) | quote }}
            {{- /* Absent (values reused from a release before the key): on, the default. */}}
            {{- if ne $root.Values.finishedMarks false }}
            - name: WARREN__WORKER__REDIS_URL
              valueFrom:
                secretKeyRef:
                  name: {{ include "warren.secretName" $root }}
                  key: redis-url
            {{- end }}
            {{- if eq .role "embed" }}
            - name: WARREN__ENGINE__ROLE
              value: embed
            {{- else }}
            - name: WARREN__ENGINE__MODEL_NAME
              value: {{ .model | quote }}
            - name: WARREN__TOPOLOGY__TASKS_EXCHANGE
              value: {{ include "warren.tasksExchange" $root }}
            - name: WARREN__TOPOLOGY__SHARDS
              value: {{ $root.Values.shards | quote }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: 9090
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: 5
            failureThreshold: 2
          # Loading a large model takes a while: liveness waits for the first readiness
          # (/healthz answers from before the model loads, so it cannot be this probe).
          startupProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: 5
            failureThreshold: 120
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 10
          resources:
            {{- $resources := deepCopy $spec.resources }}
            {{- if $spec.gpu }}
            {{- $limits := mergeOverwrite (dict "nvidia.com/gpu" 1) ($resources.limits | default dict) }}
            {{- $_ := set $resources "limits" $limits }}
            {{- end }}
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- include "warren.containerSecurity" $root | nindent 12 }}
          volumeMounts:
            {{- include "warren.volumeMounts" $root | nindent 12 }}
            - name: models
              mountPath: /models
              readOnly: true
      volumes:
        {{- include "warren.volumes" $root | nindent 8 }}
        - name: models
          persistentVolumeClaim:
            claimName: {{ include "warren.modelClaim" $root }}
            readOnly: true
---
# Scale on this worker's own queue. protocol http reads the management API, whose count
# includes unacked (in-flight) tasks, so a busy worker still counts as load.
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  labels:
    {{- include "warren.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  scaleTargetRef:
    name: {{ $name }}
  minReplicaCount: {{ $spec.minReplicas }}
  maxReplicaCount: {{ $spec.maxReplicas }}
  cooldownPeriod: {{ $root.Values.cooldownPeriod }}
  triggers:
    # One trigger over every queue this worker takes tasks from: KEDA scales to the largest
    # of several triggers, not their sum. A generation worker also serves its model's batch
    # tier (basic.get when a slot is free, no consumer), and a sharded model spreads both
    # tiers over its shards: the management API's regex filter matches them all, summed.
    - type: rabbitmq
      metadata:
        protocol: http
        {{- if eq .role "generate" }}
        {{- $shard := ternary "\\.shard-[0-9]+" "" (gt (int $root.Values.shards) 1) }}
        queueName: {{ printf "^%s(\\.batch)?%s$" (regexQuoteMeta .queue) $shard | quote }}
        useRegex: "true"
        operation: sum
        # Room for both tiers of 64 shards on one page of the management API.
        pageSize: "500"
        {{- else }}
        queueName: {{ .queue }}
        {{- end }}
        mode: QueueLength
        value: {{ $spec.tasksPerReplica | quote }}
        activationValue: {{ $spec.activationTasks | quote }}
        vhostName: {{ $root.Values.rabbitmq.vhost | quote }}
      authenticationRef:
        name: {{ include "warren.fullname" $root }}-rabbitmq-management
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "warren.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  # One worker at a time: its tasks in flight finish or go back to the queue.
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "warren.selector" $root | nindent 6 }}
      app.kubernetes.io/component: {{ $component }}
      warren.dev/model: {{ include "warren.modelSlug" (.model | default "embed") }}
{{- end -}}
