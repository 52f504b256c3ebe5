{{/* Names, labels and the pieces every pod shares. */}}

{{- define "housing.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object-name prefix; the InferenceService has this name, so KServe's objects are FULLNAME-predictor etc. */}}
{{- define "housing.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "housing.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "housing.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: housing-kserve
{{- end -}}

{{/* Labels of an InferenceService. KServe copies them onto its pod templates (components/predictor.go,
     transformer.go), so nothing here may change with the chart version: that would restart every pod, or cut
     a new Knative revision, on each chart bump. */}}
{{- define "housing.isvcLabels" -}}
{{ include "housing.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: housing-kserve
{{- end -}}

{{/* Name-less metadata of every InferenceService of the release, the stable one, the canaries and the shadow:
     (dict "ctx" $ "canaryOf" STABLE_NAME "shadowOf" STABLE_NAME "startedBy" "housing-rollout"), each optional.
     `housing rollout` finds canaries by the canary-of label. */}}
{{- define "housing.isvcMetadata" -}}
{{- $mode := include "housing.mode" .ctx -}}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "housing.isvcLabels" .ctx | nindent 2 }}
  {{- with .canaryOf }}
  housing.kserve.dev/canary-of: {{ . }}
  {{- end }}
  {{- with .shadowOf }}
  housing.kserve.dev/shadow-of: {{ . }}
  {{- end }}
  {{- if or .canaryOf .shadowOf .ctx.Values.edge.enabled }}
  {{- /* No public route: KServe's ingress reconcilers skip an InferenceService labelled cluster-local
         (ingress_reconciler.go reads Knative's label, kube_ingress_reconciler.go and httproute_reconciler.go
         KServe's). Canaries and shadows are only called by the transformer; with the edge, the edge is the
         only way in. */}}
  {{ include "housing.visibilityLabel" $mode }}: cluster-local
  {{- end }}
annotations:
  serving.kserve.io/deploymentMode: {{ $mode }}
  {{- if eq $mode "Standard" }}
  # KServe validates scaleMetric/scaleTarget against the HPA only when the class is named.
  serving.kserve.io/autoscalerClass: hpa
  {{- end }}
  {{- with .startedBy }}
  # Started by `housing rollout canary`, which ends it; kept by `helm upgrade` while it runs (templates/_rollout.tpl).
  housing.kserve.dev/started-by: {{ . }}
  {{- end }}
{{- end -}}

{{/* The label that keeps KServe's (and Knative's) public routes off an InferenceService or component. */}}
{{- define "housing.visibilityLabel" -}}
{{- if eq . "Knative" }}networking.knative.dev/visibility{{ else }}networking.kserve.io/visibility{{ end -}}
{{- end -}}

{{- define "housing.selectorLabels" -}}
app.kubernetes.io/name: {{ include "housing.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "detector") */}}
{{- define "housing.componentSelector" -}}
{{ include "housing.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Canonical KServe deployment mode (Standard or Knative) from the value, old names accepted. */}}
{{- define "housing.mode" -}}
{{- if has .Values.deploymentMode (list "Knative" "Serverless") -}}Knative{{- else -}}Standard{{- end -}}
{{- end -}}

{{- define "housing.image" -}}
{{- printf "%s/housing-%s:%s" .ctx.Values.image.registry .component (default .ctx.Chart.AppVersion .ctx.Values.image.tag) -}}
{{- end -}}

{{- define "housing.serviceAccountName" -}}{{ include "housing.fullname" . }}{{- end -}}
{{- define "housing.detectorName" -}}{{ include "housing.fullname" . }}-detector{{- end -}}

{{/* The InferenceService of a canary: (dict "ctx" $ "name" CANARY_NAME). */}}
{{- define "housing.canaryName" -}}{{ include "housing.fullname" .ctx }}-{{ .name }}{{- end -}}

{{/* The detector Service URL the transformer posts inference CloudEvents to. */}}
{{- define "housing.loggerUrl" -}}
{{- if .Values.logger.url -}}
{{- .Values.logger.url -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local:8080" (include "housing.detectorName" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Container security context shared by every container: non-root, read-only root, nothing extra. */}}
{{- define "housing.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "housing.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The predictor of an InferenceService, the stable one or a canary's:
     (dict "ctx" $ "model" MODEL "endpoint" "default"|"canary") */}}
{{- define "housing.predictorSpec" -}}
{{- $ := .ctx -}}
{{- $values := $.Values -}}
labels:
  {{- include "housing.componentSelector" (dict "ctx" $ "component" "predictor") | nindent 2 }}
  housing.kserve.dev/endpoint: {{ .endpoint }}
  {{- if $values.azure.workloadIdentity.enabled }}
  azure.workload.identity/use: "true"
  {{- end }}
  {{- include "housing.knativeClusterLocal" $ | indent 2 }}
annotations:
  housing.kserve.dev/model-sha256: {{ .model.sha256 | default "unpinned" | quote }}
  {{- with .model.version }}
  housing.kserve.dev/model-version: {{ . | quote }}
  {{- end }}
serviceAccountName: {{ include "housing.serviceAccountName" $ }}
minReplicas: {{ $values.predictor.minReplicas }}
maxReplicas: {{ $values.predictor.maxReplicas }}
scaleMetric: {{ include "housing.scaleMetric" (dict "ctx" $ "component" $values.predictor) }}
scaleTarget: {{ $values.predictor.scaleTarget }}
{{- /* No `logger`: the transformer logs (values.yaml `logger`). With one, KServe would also point the
       predictor Service at its agent's port 9081 (service_reconciler.go). */}}
{{- include "housing.topologySpread" (dict "ctx" $ "component" "predictor" "endpoint" .endpoint) }}
containers:
  - name: kserve-container
    image: {{ include "housing.image" (dict "ctx" $ "component" "predictor") }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    command: [python, -m, predictor]
    args:
      - --model_name
      - {{ $values.model.name }}
      - --storage_uri
      - {{ .model.storageUri | quote }}
      {{- with .model.sha256 }}
      - --expected_sha256
      - {{ . | quote }}
      {{- end }}
      - --http_port
      - "8080"
      - --grpc_port
      - "8081"
      {{- range $values.predictor.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      # Read by KServe to know the predictor's protocol (the transformer calls it with --protocol v2).
      # Not STORAGE_URI: that env var would make KServe add its storage initializer.
      - name: PROTOCOL
        value: v2
      - name: OMP_NUM_THREADS
        value: {{ $values.predictor.ompNumThreads | quote }}
      - name: TMPDIR
        value: /tmp
    ports:
      - name: http1
        containerPort: 8080
        protocol: TCP
    # The server is live at once and ready once the verified model is loaded (downloads are retried in the
    # background), so no startup probe is needed; Knative before 1.15 would refuse one anyway.
    readinessProbe:
      httpGet: {path: /v2/models/{{ $values.model.name }}/ready, port: 8080}
      periodSeconds: 10
      failureThreshold: 3
    livenessProbe:
      httpGet: {path: /v2/health/live, port: 8080}
      periodSeconds: 15
      failureThreshold: 4
    resources:
      {{- toYaml $values.predictor.resources | nindent 6 }}
    securityContext:
      {{- include "housing.containerSecurityContext" $ | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: 1Gi}
{{- end -}}

{{/* Spread a component's pods (one rollout role) across nodes and zones:
     (dict "ctx" $ "component" "predictor" "endpoint" "default") */}}
{{- define "housing.topologySpread" -}}
{{- if .ctx.Values.availability.topologySpread }}
topologySpreadConstraints:
  {{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "housing.componentSelector" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
        housing.kserve.dev/endpoint: {{ $.endpoint }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The scale metric of a component: the value, or the mode's natural one. */}}
{{- define "housing.scaleMetric" -}}
{{- if .component.scaleMetric -}}
{{- .component.scaleMetric -}}
{{- else if eq (include "housing.mode" .ctx) "Knative" -}}
concurrency
{{- else -}}
cpu
{{- end -}}
{{- end -}}

{{/* Environment of the training pods (CronJob and the detector's Jobs). */}}
{{- define "housing.trainingEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ .Values.training.mlflowTrackingUri | quote }}
- name: OMP_NUM_THREADS
  value: "1"
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- end -}}

{{/* The training container: train, gate, register, publish. */}}
{{- define "housing.trainingContainer" -}}
name: trainer
image: {{ include "housing.image" (dict "ctx" . "component" "trainer") }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
command: [housing, train]
args:
  - --output
  - /tmp/artifact
  - --publish
  - {{ .Values.training.publishUri | quote }}
  - --no-progress
  {{- with .Values.detector.archive.uri }}
  # The bundled data set and the traffic archive's labelled rows (docs/detector.md, "The traffic archive").
  - --data
  - bundled
  - {{ . | quote }}
  {{- end }}
  {{- range .Values.training.extraArgs }}
  - {{ . | quote }}
  {{- end }}
env:
  {{- include "housing.trainingEnv" . | nindent 2 }}
resources:
  {{- toYaml .Values.training.resources | nindent 2 }}
securityContext:
  {{- include "housing.containerSecurityContext" . | nindent 2 }}
volumeMounts:
  - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* Pod spec of a training Job (CronJob and detector-triggered). */}}
{{- define "housing.trainingPodSpec" -}}
serviceAccountName: {{ include "housing.serviceAccountName" . }}
automountServiceAccountToken: false
restartPolicy: Never
securityContext:
  {{- include "housing.podSecurityContext" . | nindent 2 }}
containers:
  - {{- include "housing.trainingContainer" . | nindent 4 }}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: 2Gi}
{{- end -}}

{{/* The edge's CORS policy for a VirtualService route; nothing when no origin is allowed (browsers then refuse
     every cross-origin call). */}}
{{- define "housing.edge.cors" -}}
{{- if .allowOrigins }}
corsPolicy:
  allowOrigins:
    {{- range .allowOrigins }}
    - exact: {{ . | quote }}
    {{- end }}
  allowMethods: {{ toJson .allowMethods }}
  allowHeaders: {{ toJson .allowHeaders }}
  allowCredentials: {{ .allowCredentials }}
  maxAge: {{ .maxAge }}
{{- end }}
{{- end -}}

{{/* `when` conditions of an AuthorizationPolicy rule: each claim must hold one of its values. */}}
{{- define "housing.edge.claims" -}}
{{- if . }}
when:
  {{- range $claim, $values := . }}
  - key: request.auth.claims[{{ $claim }}]
    values: {{ toJson $values }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* An AuthorizationPolicy rule: GET /metrics on the container port 8080, for whoever the NetworkPolicies let
     in there (Prometheus's namespace; in Standard mode also the gateways, where the edge routes no /metrics).
     Not `source.namespaces`: it is read from the peer certificate ("requires mTLS enabled",
     authorization_policy.proto), so a Prometheus without a sidecar would match nothing and get 403. */}}
{{- define "housing.edge.metrics" -}}
- to:
    - operation:
        ports: ["8080"]
        methods: [GET]
        paths: ["/metrics"]
{{- end -}}


{{/* Knative mode: a component's own Knative Service gets no public route (Knative copies its labels to the
     Route, route/config/domain.go LookupDomainForLabels), while the InferenceService's host still does. Only
     the transformer's must stay public: KServe derives the InferenceService's host from it. */}}
{{- define "housing.knativeClusterLocal" -}}
{{- if eq (include "housing.mode" .) "Knative" }}
networking.knative.dev/visibility: cluster-local
{{- end }}
{{- end -}}
