{{/* The explainer of the stable InferenceService (spec.explainer): `python -m explainer` on the stable model's
     artifact, pinned to model.joblib's sha256 (explainer.sha256; the predictor pins model.onnx). KServe's
     controller appends --model_name (unless given), --predictor_host and --http_port 8080 to a custom
     explainer's args (explainer_custom.go GetContainer); the explainer accepts and ignores --predictor_host. */}}
{{- define "housing.explainerSpec" -}}
{{- $ := . -}}
{{- $v := .Values -}}
labels:
  {{- include "housing.componentSelector" (dict "ctx" $ "component" "explainer") | nindent 2 }}
  housing.kserve.dev/endpoint: default
  {{- if $v.azure.workloadIdentity.enabled }}
  azure.workload.identity/use: "true"
  {{- end }}
  {{- include "housing.knativeClusterLocal" $ | indent 2 }}
annotations:
  housing.kserve.dev/model-sha256: {{ $v.explainer.sha256 | default "unpinned" | quote }}
  {{- with $v.model.version }}
  housing.kserve.dev/model-version: {{ . | quote }}
  {{- end }}
  {{- with (include "housing.sidecarAnnotations" (dict "ctx" $ "component" "explainer") | trim) }}{{ . | nindent 2 }}{{ end }}
serviceAccountName: {{ include "housing.serviceAccountName" $ }}
minReplicas: {{ $v.explainer.minReplicas }}
maxReplicas: {{ $v.explainer.maxReplicas }}
scaleMetric: {{ include "housing.scaleMetric" (dict "ctx" $ "component" $v.explainer) }}
scaleTarget: {{ $v.explainer.scaleTarget }}
{{- include "housing.podShutdown" (dict "ctx" $ "component" "explainer") }}
{{- include "housing.topologySpread" (dict "ctx" $ "component" "explainer" "endpoint" "default") }}
containers:
  - name: kserve-container
    image: {{ include "housing.image" (dict "ctx" $ "component" "explainer") }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    command: [python, -m, explainer]
    args:
      - --model_name
      - {{ $v.model.name }}
      - --storage_uri
      - {{ $v.model.storageUri | quote }}
      {{- with $v.explainer.sha256 }}
      - --expected_sha256
      - {{ . | quote }}
      {{- end }}
      # :explain is V1 REST only (KServe has no V2 or gRPC form of it).
      - --enable_grpc
      - "false"
      {{- include "housing.listenerArgs" (dict "ctx" $ "component" "explainer") | nindent 6 }}
      {{- range $v.explainer.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      - name: OMP_NUM_THREADS
        value: "1"
      - name: TMPDIR
        value: /tmp
      {{- with (include "housing.podIpEnv" (dict "ctx" $ "component" "explainer") | trim) }}{{ . | nindent 6 }}{{ end }}
    ports:
      - name: http1
        containerPort: 8080
        protocol: TCP
    # Ready once the verified artifact is loaded (an explanation is never of an unverified model).
    readinessProbe:
      httpGet: {path: /v1/models/{{ $v.model.name }}, port: 8080}
      periodSeconds: 10
      failureThreshold: 3
    livenessProbe:
      httpGet: {path: /v2/health/live, port: 8080}
      periodSeconds: 15
      failureThreshold: 4
    {{- with (include "housing.preStop" $ | trim) }}{{ . | nindent 4 }}{{ end }}
    resources:
      {{- toYaml $v.explainer.resources | nindent 6 }}
    securityContext:
      {{- include "housing.containerSecurityContext" $ | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: 1Gi}
{{- end -}}
