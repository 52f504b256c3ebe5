{{/*
Rules that span several values. KServe would silently ignore most of these combinations (a canary field of the
other mode, an autoscaling metric its autoscaler does not know), so the render fails instead, saying what to do.
*/}}
{{- define "housing.validate" -}}
{{- $v := .Values -}}
{{- $mode := include "housing.mode" . -}}
{{- if not (kindIs "invalid" $v.rollout.canaryTrafficPercent) -}}
{{- fail "rollout.canaryTrafficPercent (Knative's split between revisions) is no longer used: the transformer could not tell which revision answered, nor log it. Keep model as the stable model and add the new one to rollout.canaries (name, trafficPercent, model), in either deployment mode" -}}
{{- end -}}
{{- $total := 0 -}}
{{- $names := list -}}
{{- range (include "housing.canaries" . | fromJsonArray) -}}
{{- if has .name $names -}}
{{- fail (printf "rollout.canaries: the name %q is used twice; each canary needs its own name" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- $service := printf "%s-predictor" (include "housing.canaryName" (dict "ctx" $ "name" .name)) -}}
{{- if gt (len $service) 57 -}}
{{- fail (printf "rollout.canaries[%s]: KServe would name its predictor %s (%d characters); with Knative's -00001 revision suffix (and Standard mode's isvc. label prefix) that exceeds the 63 characters of a label value: shorten the canary name or set fullnameOverride" .name $service (len $service)) -}}
{{- end -}}
{{- $total = add $total .trafficPercent -}}
{{- if and (eq .model.storageUri $v.model.storageUri) (eq (.model.sha256 | default "") ($v.model.sha256 | default "")) -}}
{{- if .startedBy -}}
{{- fail (printf "canary %s, started by `housing rollout canary` and still running, serves the model now in model.*: end it first with `housing rollout promote %s` (or rollback), then upgrade" .name (include "housing.fullname" $)) -}}
{{- end -}}
{{- fail (printf "rollout.canaries[%s] serves the same model as the stable predictor (model.storageUri and model.sha256): a canary must differ" .name) -}}
{{- end -}}
{{- end -}}
{{- with $v.rollout.shadow.name -}}
{{- $shadow := $v.rollout.shadow -}}
{{- if has . $names -}}
{{- fail (printf "rollout.shadow: the name %q is also a canary's; the shadow needs its own name" .) -}}
{{- end -}}
{{- if not $shadow.model -}}
{{- fail "rollout.shadow: a shadow needs a model (storageUri, sha256)" -}}
{{- end -}}
{{- if lt (int ($shadow.percent | default 0)) 1 -}}
{{- fail "rollout.shadow.percent must be 1 to 100: the share of requests copied to the shadow" -}}
{{- end -}}
{{- $service := printf "%s-predictor" (include "housing.canaryName" (dict "ctx" $ "name" .)) -}}
{{- if gt (len $service) 57 -}}
{{- fail (printf "rollout.shadow: KServe would name its predictor %s (%d characters), too long for a label value with Knative's revision suffix: shorten its name" $service (len $service)) -}}
{{- end -}}
{{- end -}}
{{- if gt (int $total) 100 -}}
{{- fail (printf "rollout.canaries: trafficPercent adds up to %d; the canaries' shares must add up to 100 or less (the stable predictor gets the rest)" (int $total)) -}}
{{- end -}}
{{- range $component := concat (list "predictor" "transformer") (ternary (list "explainer") (list) $v.explainer.enabled) -}}
{{- $c := index $v $component -}}
{{- if gt (int $c.minReplicas) (int $c.maxReplicas) -}}
{{- fail (printf "%s.minReplicas (%d) is greater than %s.maxReplicas (%d)" $component (int $c.minReplicas) $component (int $c.maxReplicas)) -}}
{{- end -}}
{{- $metric := include "housing.scaleMetric" (dict "ctx" $ "component" $c) -}}
{{- if eq $mode "Standard" -}}
{{- if eq (int $c.minReplicas) 0 -}}
{{- fail (printf "%s.minReplicas is 0, but scale to zero needs Knative: set it to 1 or more in Standard (RawDeployment) mode" $component) -}}
{{- end -}}
{{- if not (has $metric (list "cpu" "memory")) -}}
{{- fail (printf "%s.scaleMetric %q needs Knative's autoscaler; Standard (RawDeployment) mode scales with an HPA on cpu or memory" $component $metric) -}}
{{- end -}}
{{- /* KServe's HPA reads the target as AverageUtilization for cpu and memory alike (hpa_reconciler.go
       getHPAMetrics), and its webhook refuses any target above 100 (validateScalingHPACompExtension). */ -}}
{{- if gt (int $c.scaleTarget) 100 -}}
{{- fail (printf "%s.scaleTarget is %d, but with scaleMetric %s KServe's HPA reads it as a utilisation percentage of the container's request (1-100), and its webhook refuses more than 100" $component (int $c.scaleTarget) $metric) -}}
{{- end -}}
{{- else if not (has $metric (list "concurrency" "rps")) -}}
{{- fail (printf "%s.scaleMetric %q: Knative mode scales on concurrency or rps (cpu/memory would need Knative's HPA class, which this chart does not set)" $component $metric) -}}
{{- end -}}
{{- end -}}
{{- if and $v.logger.enabled (not $v.detector.enabled) (not $v.logger.url) -}}
{{- fail "logger.enabled sends the CloudEvents to the detector, but detector.enabled is false: set logger.enabled: false, or logger.url to another receiver" -}}
{{- end -}}
{{- if $v.edge.enabled -}}
{{- $auth := $v.edge.auth -}}
{{- if and $auth.enabled (not (and $auth.issuer $auth.jwksUri $auth.audiences)) -}}
{{- fail "edge.auth.enabled needs edge.auth.issuer, edge.auth.jwksUri and edge.auth.audiences (for Entra ID: https://login.microsoftonline.com/TENANT_ID/v2.0, .../discovery/v2.0/keys and your API's audience): without them every token would be refused, or any issuer's accepted" -}}
{{- end -}}
{{- if and $v.edge.cors.allowCredentials (has "*" $v.edge.cors.allowOrigins) -}}
{{- fail "edge.cors: allowOrigins \"*\" together with allowCredentials would let any web page send your users' credentials: list the origins, or set allowCredentials: false" -}}
{{- end -}}
{{- $mtls := $v.edge.mtls -}}
{{- if and $mtls.strict $v.monitoring.podMonitors.enabled (not $mtls.peersInMesh.prometheus) -}}
{{- fail "edge.mtls.strict refuses Prometheus's plain-text scrapes (STRICT accepts mutual TLS only, before any policy): scrape with Istio's certificates and set edge.mtls.peersInMesh.prometheus: true, or turn STRICT off (the AuthorizationPolicies then let a plain-text Prometheus read /metrics)" -}}
{{- end -}}
{{- if and $mtls.strict (eq $mode "Knative") (not $mtls.peersInMesh.knativeServing) -}}
{{- fail "edge.mtls.strict refuses the plain text of Knative's activator and autoscaler, so no revision would ever count as healthy: put knative-serving in the mesh (sidecar injection on its namespace, as Knative's Istio guide says) and set edge.mtls.peersInMesh.knativeServing: true, or turn STRICT off" -}}
{{- end -}}
{{- $rl := $v.edge.rateLimit -}}
{{- if and $rl.enabled (or (lt (int $rl.maxTokens) 1) (lt (int $rl.tokensPerFill) 1)) -}}
{{- fail (printf "edge.rateLimit: maxTokens (%d) and tokensPerFill (%d) must be at least 1: a rate limit of zero refuses every request (set edge.rateLimit.enabled: false to have none)" (int $rl.maxTokens) (int $rl.tokensPerFill)) -}}
{{- end -}}
{{- if and $rl.enabled (gt (int $rl.tokensPerFill) (int $rl.maxTokens)) -}}
{{- fail (printf "edge.rateLimit: tokensPerFill (%d) is larger than maxTokens (%d), the bucket it fills" (int $rl.tokensPerFill) (int $rl.maxTokens)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.edge.enabled $v.networkPolicy.enabled (not $v.networkPolicy.istio.enabled) -}}
{{- fail "edge.enabled puts the release behind Istio, whose policies the pods' sidecars enforce; with networkPolicy.enabled those sidecars must reach istiod: set networkPolicy.istio.enabled (and label the namespace istio-injection=enabled)" -}}
{{- end -}}
{{- if $v.predictor.repositoryApi.enabled -}}
{{- if not (and $v.edge.enabled $v.edge.auth.enabled) -}}
{{- fail "predictor.repositoryApi.enabled lets tokens with edge.auth.adminClaims load and unload models: it needs edge.enabled and edge.auth.enabled (without them nothing could check the admin role)" -}}
{{- end -}}
{{- if not (or (has "--model" $v.predictor.extraArgs) (has "--models_config" $v.predictor.extraArgs)) -}}
{{- fail "predictor.repositoryApi.enabled serves the models pinned in predictor.extraArgs: add them (--model NAME=URI@SHA256 ..., docs/kubernetes.md), or the predictor refuses to start" -}}
{{- end -}}
{{- end -}}
{{- /* Rows: the transformer's batches reach the predictor (merged up to 256 rows: transformer/batching.py
       COALESCE_ROWS) and the explainer, and its events the detector (given the same --max_rows). */ -}}
{{- $rows := int $v.transformer.limits.maxBatchRows -}}
{{- if lt (int $v.predictor.limits.maxBatchRows) (max $rows 256) -}}
{{- fail (printf "predictor.limits.maxBatchRows (%d) is below what the transformer sends it: its own batches of up to transformer.limits.maxBatchRows (%d) rows, merged up to 256 rows (transformer/batching.py): raise it to %d" (int $v.predictor.limits.maxBatchRows) $rows (max $rows 256)) -}}
{{- end -}}
{{- if and $v.explainer.enabled (lt (int $v.explainer.limits.maxBatchRows) $rows) -}}
{{- fail (printf "explainer.limits.maxBatchRows (%d) is below transformer.limits.maxBatchRows (%d): the transformer would accept explanations the explainer refuses" (int $v.explainer.limits.maxBatchRows) $rows) -}}
{{- end -}}
{{- if gt (int (include "housing.transformerClientInFlight" .)) (int $v.resilience.maxInFlight) -}}
{{- fail (printf "transformer.limits.maxInFlightPerClient (%s) is above resilience.maxInFlight (%d): one client could still hold every place" (include "housing.transformerClientInFlight" .) (int $v.resilience.maxInFlight)) -}}
{{- end -}}
{{- if and $v.azure.workloadIdentity.enabled (not $v.azure.workloadIdentity.clientId) -}}
{{- fail "azure.workloadIdentity.enabled needs azure.workloadIdentity.clientId: the client ID of the managed identity with Storage Blob Data access" -}}
{{- end -}}
{{- end -}}
