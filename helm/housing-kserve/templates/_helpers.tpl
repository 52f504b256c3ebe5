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
{{- define "housing.transformerServiceAccountName" -}}{{ include "housing.fullname" . }}-transformer{{- end -}}
{{/* The transformer's mTLS identity in the mesh (SPIFFE: cluster.local/ns/NAMESPACE/sa/ACCOUNT). */}}
{{- define "housing.transformerPrincipal" -}}
cluster.local/ns/{{ .Release.Namespace }}/sa/{{ include "housing.transformerServiceAccountName" . }}
{{- end -}}
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
  {{- with (include "housing.sidecarAnnotations" (dict "ctx" $ "component" "predictor") | trim) }}{{ . | nindent 2 }}{{ end }}
serviceAccountName: {{ include "housing.serviceAccountName" $ }}
minReplicas: {{ $values.predictor.minReplicas }}
maxReplicas: {{ $values.predictor.maxReplicas }}
scaleMetric: {{ include "housing.scaleMetric" (dict "ctx" $ "component" $values.predictor) }}
scaleTarget: {{ $values.predictor.scaleTarget }}
{{- include "housing.podShutdown" (dict "ctx" $ "component" "predictor") }}
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
      {{- include "housing.listenerArgs" (dict "ctx" $ "component" "predictor") | nindent 6 }}
      {{- if $values.predictor.repositoryApi.enabled }}
      # The V2 repository API over the models pinned in extraArgs: the admin role (edge.yaml), nobody else.
      - --enable_repository_api
      {{- end }}
      {{- range $values.predictor.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      # Read by KServe to know the predictor's protocol (the transformer calls it with --protocol v2).
      # Not STORAGE_URI: that env var would make KServe add its storage initializer.
      - name: PROTOCOL
        value: v2
      {{- with (include "housing.podIpEnv" (dict "ctx" $ "component" "predictor") | trim) }}{{ . | nindent 6 }}{{ end }}
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
    {{- with (include "housing.preStop" $ | trim) }}{{ . | nindent 4 }}{{ end }}
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


{{/* An AuthorizationPolicy rule: the `open` GETs of a KServe server (serving/policy.py: liveness, readiness,
     metadata, the OpenAPI document), and of the transformer also the original API's /health: (list EXTRA_PATH...). */}}
{{- define "housing.edge.open" -}}
- to:
    - operation:
        ports: {{ include "housing.edge.ports" (dict "ctx" (index . 0) "probes" true) }}
        methods: [GET]
        paths: {{ toJson (concat (list "/" "/openapi.json" "/v2" "/v2/health/*" "/v1/models" "/v1/models/*" "/v2/models" "/v2/models/*") (rest .)) }}
{{- end -}}

{{/* The ports requests to a KServe server arrive on, as its sidecar sees them: the container's 8080 in Standard
     mode; the queue-proxy's 8012 in Knative mode (deploy.go: every request enters there), and for GETs also the
     container's 8080, where the kubelet's liveness probe comes (rewriteUserLivenessProbe) when Istio does not
     rewrite probes. (dict "ctx" $ "probes" BOOL) */}}
{{- define "housing.edge.ports" -}}
{{- if ne (include "housing.mode" .ctx) "Knative" }}["8080"]{{ else if .probes }}["8012", "8080"]{{ else }}["8012"]{{ end -}}
{{- end -}}

{{/* AuthorizationPolicy rules in Knative mode: the activator probes every pod, GET /healthz with
     K-Network-Probe: queue on the queue-proxy's 8012 (revision_backends.go probe()), and the autoscaler scrapes the
     queue-proxy's statistics on 9090 (stats_scraper.go); both in plain text unless knative-serving is in the mesh,
     without a token. A 403 to the probe keeps the pod out of the activator's healthy set for good. The
     queue-proxy answers both itself. Nothing in Standard mode. */}}
{{- define "housing.edge.knative" -}}
{{- if eq (include "housing.mode" .) "Knative" }}
- to:
    - operation:
        ports: ["8012"]
        methods: [GET]
        paths: ["/healthz"]
  when:
    - key: request.headers[K-Network-Probe]
      values: [queue]
- to:
    - operation:
        ports: ["9090"]
        methods: [GET]
        paths: ["/metrics"]
{{- end }}
{{- end -}}

{{/* Knative mode: a component's own Knative Service gets no public route (Knative copies its labels to the
     Route, route/config/domain.go LookupDomainForLabels), while the InferenceService's host still does. Only
     the transformer's must stay public: KServe derives the InferenceService's host from it. */}}
{{- define "housing.knativeClusterLocal" -}}
{{- if eq (include "housing.mode" .) "Knative" }}
networking.knative.dev/visibility: cluster-local
{{- end }}
{{- end -}}

{{/* Whether Istio sidecars front the release's pods: the edge's policies need them, and networkPolicy.istio says
     so. (_validate.tpl refuses the edge with NetworkPolicies but without networkPolicy.istio.) */}}
{{- define "housing.sidecars" -}}
{{- if or .Values.edge.enabled .Values.networkPolicy.istio.enabled }}true{{ end -}}
{{- end -}}

{{/* Whether a component's listener must cover loopback: in Knative mode the queue-proxy forwards every request and
     probes readiness on 127.0.0.1 (knative/serving pkg/queue/sharedmain/main.go, pkg/queue/health/probe.go), while
     the kubelet's liveness probe and Prometheus come to the pod IP (deploy.go rewriteUserLivenessProbe), so only
     0.0.0.0 covers both; Knative also refuses the downward API's fieldRef in a revision unless the cluster turned
     kubernetes.podspec-fieldref on (pkg/apis/serving/k8s_validation.go, EnvVarSourceMask). The detector is a
     Deployment of the chart's own: its pod IP. (dict "ctx" $ "component" NAME) */}}
{{- define "housing.allInterfaces" -}}
{{- if and (eq (include "housing.mode" .ctx) "Knative") (ne .component "detector") }}true{{ end -}}
{{- end -}}

{{/* The POD_IP variable the listener binds (the downward API), where the pod IP is the address. */}}
{{- define "housing.podIpEnv" -}}
{{- if not (include "housing.allInterfaces" .) }}
# The address the server binds: the Service, the kubelet, Prometheus and the Istio sidecar come there.
- name: POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
{{- end }}
{{- end -}}

{{/* The listener and input-limit flags of a server (serving/edge.py), from its values: (dict "ctx" $ "component"
     NAME). Bind: the pod IP, or 0.0.0.0 in Knative mode (housing.allInterfaces). Trusted proxies: 127.0.0.6 where a
     sidecar fronts the pod (Istio's inbound passthrough source, pilot listener_address.go; the sidecar adds no
     X-Forwarded-For of its own, listener_inbound.go useRemoteAddress false), 127.0.0.1 in Knative mode (the
     queue-proxy, a Go ReverseProxy that appends the address it got the request from), then servers.trustedProxies.
     The limits: each given one, else the table's per route (serving/policy.py). */}}
{{- define "housing.listenerArgs" -}}
{{- $ctx := .ctx -}}
{{- $all := include "housing.allInterfaces" . -}}
{{- $limits := index $ctx.Values .component "limits" -}}
- --bind_address
- {{ if $all }}"0.0.0.0"{{ else }}$(POD_IP){{ end }}
{{- $proxies := list -}}
{{- if include "housing.sidecars" $ctx }}{{ $proxies = append $proxies "127.0.0.6" }}{{ end -}}
{{- if $all }}{{ $proxies = append $proxies "127.0.0.1" }}{{ end -}}
{{- $proxies = concat $proxies $ctx.Values.servers.trustedProxies | uniq -}}
{{- with $proxies }}
- --trusted_proxies
- {{ join "," . | quote }}
{{- end }}
{{- if hasKey $limits "maxBodyBytes" }}{{ with $limits.maxBodyBytes }}
- --max_body_bytes
- {{ int64 . | quote }}
{{- end }}{{ end }}
{{- if hasKey $limits "maxBodySeconds" }}{{ with $limits.maxBodySeconds }}
- --max_body_seconds
- {{ . | quote }}
{{- end }}{{ end }}
- --max_header_bytes
- {{ int64 $limits.maxHeaderBytes | quote }}
{{- if hasKey $limits "maxBatchRows" }}
- --max_batch_rows
- {{ int64 $limits.maxBatchRows | quote }}
{{- end }}
{{- if eq .component "transformer" }}
- --max_in_flight_per_client
- {{ include "housing.transformerClientInFlight" $ctx | quote }}
{{- else if and (hasKey $limits "maxInFlightPerClient") $limits.maxInFlightPerClient }}
- --max_in_flight_per_client
- {{ int64 $limits.maxInFlightPerClient | quote }}
{{- end }}
{{- end -}}

{{/* Requests one client may have in flight in the transformer: the value, else half of resilience.maxInFlight. */}}
{{- define "housing.transformerClientInFlight" -}}
{{- $limits := .Values.transformer.limits -}}
{{- if and (hasKey $limits "maxInFlightPerClient") $limits.maxInFlightPerClient -}}
{{- int64 $limits.maxInFlightPerClient -}}
{{- else -}}
{{- max 1 (div (int64 .Values.resilience.maxInFlight) 2) -}}
{{- end -}}
{{- end -}}

{{/* Seconds a stopping server needs after SIGTERM, beyond the requests in flight (docs/kubernetes.md, "Graceful
     shutdown"): the transformer's request logger delivers what it holds within 5 s (transformer/request_logger.py,
     RequestLogger.close); the detector saves its state, seals its archive segment and lets the uploader try once
     more within 25 s (detector/archive.py, Archiver.stop: 10 s, 10 s, then 5 s to terminate), after requests whose
     bodies take up to 10 s (serving/policy.py, EVENTS). tests/k8s/test_shutdown.py reads each from its source. */}}
{{- define "housing.flushSeconds" -}}
{{- if eq . "transformer" }}5{{ else if eq . "detector" }}25{{ else }}0{{ end -}}
{{- end -}}

{{/* The seconds a component's pod may take to stop, counted from its deletion (the kubelet's grace period includes
     the preStop hook): (dict "ctx" $ "component" NAME "preStop" SECONDS). The requests in flight take up to the
     deadline (resilience.requestTimeoutSeconds: the transformer's, which covers its calls to the predictor and the
     explainer; the detector's: its largest body time), then the flush, then 5 s of margin. */}}
{{- define "housing.gracePeriod" -}}
{{- $ctx := .ctx -}}
{{- $requests := int (ceil $ctx.Values.resilience.requestTimeoutSeconds) -}}
{{- if eq .component "detector" }}{{ $requests = 10 }}{{ end -}}
{{- add (int .preStop) $requests (int (include "housing.flushSeconds" .component)) 5 -}}
{{- end -}}

{{/* How a predictor, transformer or explainer pod stops and is replaced, beside its containers: (dict "ctx" $
     "component" NAME). Standard mode: rolling updates that never take a serving pod away before its successor is
     ready (KServe's default is 25% unavailable: reconcilers/deployment/deployment_reconciler.go
     setDefaultDeploymentSpec), and a grace period covering the preStop pause, the requests in flight and the
     flush. Knative mode sets neither: KServe refuses deploymentStrategy there (inference_service_validation.go
     validateScalingKPACompExtension), Knative refuses terminationGracePeriodSeconds (fieldmask.go PodSpecMask) and
     uses the revision's timeoutSeconds (300 s by default), and rolls revisions with maxUnavailable 0 itself
     (revision/resources/deploy.go). With Istio sidecars, the sidecar stays until the server is done. */}}
{{- define "housing.podShutdown" -}}
{{- if eq (include "housing.mode" .ctx) "Standard" }}
terminationGracePeriodSeconds: {{ include "housing.gracePeriod" (dict "ctx" .ctx "component" .component "preStop" .ctx.Values.shutdown.preStopSeconds) }}
deploymentStrategy:
  type: RollingUpdate
  rollingUpdate: {maxUnavailable: 0, maxSurge: 25%}
{{- end }}
{{- end -}}

{{/* The preStop pause of a predictor, transformer or explainer container (Standard mode only: Knative replaces the
     container's lifecycle with the queue-proxy's drain, deploy.go makeContainer, and refuses one in the spec,
     fieldmask.go ContainerMask). */}}
{{- define "housing.preStop" -}}
{{- if and (eq (include "housing.mode" .) "Standard") (gt (int .Values.shutdown.preStopSeconds) 0) }}
# Keep serving while this pod's endpoint leaves every load balancer; SIGTERM comes after.
lifecycle:
  preStop:
    sleep: {seconds: {{ int .Values.shutdown.preStopSeconds }}}
{{- end }}
{{- end -}}

{{/* Pod annotations that keep a classic Istio sidecar until the server has stopped: on SIGTERM (at the pod's
     deletion: the sidecar has no preStop) it drains and exits after terminationDrainDuration, 5 s by default
     (istio pkg/envoy/agent.go terminate, pkg/config/mesh/mesh.go); the server's calls after that (the
     transformer's last predictions and logger batch, the detector's last upload) would fail, and so would requests
     still arriving during the preStop pause or Knative's 30 s queue-proxy drain. (dict "ctx" $ "component" NAME) */}}
{{- define "housing.sidecarAnnotations" -}}
{{- if include "housing.sidecars" .ctx }}
{{- $preStop := 0 -}}
{{- if eq .component "detector" -}}
{{- if gt (int .ctx.Values.detector.replicas) 1 }}{{ $preStop = .ctx.Values.shutdown.preStopSeconds }}{{ end -}}
{{- else if eq (include "housing.mode" .ctx) "Knative" -}}
{{- $preStop = 30 -}}
{{- else -}}
{{- $preStop = .ctx.Values.shutdown.preStopSeconds -}}
{{- end }}
proxy.istio.io/config: {{ printf "{\"terminationDrainDuration\": \"%ss\"}" (include "housing.gracePeriod" (dict "ctx" .ctx "component" .component "preStop" $preStop)) | quote }}
{{- end }}
{{- end -}}
