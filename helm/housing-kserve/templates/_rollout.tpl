{{/*
The canaries of the release, one owner each (docs/rollout.md, "One owner: Helm values or the command"):

- those `rollout.canaries` declares: the values own them; `helm upgrade` starts, changes and ends them (the
  transformer's annotation `housing.kserve.dev/helm-canaries` lists them, for the command and the next upgrade);
- on an upgrade, those `housing rollout canary` started that still get traffic: read from the cluster
  (`lookup`: the transformer's `--canary NAME=PERCENT,HOST` args and the canary's InferenceService, annotated
  `housing.kserve.dev/started-by: housing-rollout`) and rendered as they run, so an upgrade keeps the split
  (a custom resource's update is a JSON merge patch that replaces the transformer's whole args list) and Helm
  takes the canary's objects into the release (the command writes Helm's ownership metadata). The command
  ends them (`housing rollout promote|rollback`); the next upgrade then finds them gone.

`helm template` and `--dry-run` without a cluster see no running canary. The result is a JSON list of
{name, trafficPercent, model: {storageUri, sha256, version}, startedBy}.
*/}}
{{- define "housing.canaries" -}}
{{- $canaries := list -}}
{{- $declared := list -}}
{{- range .Values.rollout.canaries -}}
{{- $canaries = append $canaries (dict "name" .name "trafficPercent" .trafficPercent "model" .model "startedBy" "") -}}
{{- $declared = append $declared .name -}}
{{- end -}}
{{- $fullname := include "housing.fullname" . -}}
{{- $stable := lookup "serving.kserve.io/v1beta1" "InferenceService" .Release.Namespace $fullname -}}
{{- /* The canaries the previous values declared: an upgrade whose values drop one ends it (Helm deletes it). */ -}}
{{- $wasDeclared := splitList "," (dig "spec" "transformer" "annotations" "housing.kserve.dev/helm-canaries" "" ($stable | default dict)) -}}
{{- $containers := dig "spec" "transformer" "containers" (list) ($stable | default dict) -}}
{{- if $containers -}}
{{- $args := (index $containers 0).args | default list -}}
{{- range $index, $arg := $args -}}
{{- $route := "" -}}
{{- if hasPrefix "--canary=" $arg -}}
{{- $route = trimPrefix "--canary=" $arg -}}
{{- else if and (eq $arg "--canary") (lt (add1 $index) (len $args)) -}}
{{- $route = index $args (add1 $index) -}}
{{- end -}}
{{- if $route -}}
{{- $name := (splitList "=" $route) | first -}}
{{- $percent := (splitList "," (trimPrefix (printf "%s=" $name) $route)) | first -}}
{{- $isvc := lookup "serving.kserve.io/v1beta1" "InferenceService" $.Release.Namespace (printf "%s-%s" $fullname $name) | default dict -}}
{{- $startedBy := dig "metadata" "annotations" "housing.kserve.dev/started-by" "" $isvc -}}
{{- $canaryOf := dig "metadata" "labels" "housing.kserve.dev/canary-of" "" $isvc -}}
{{- if and (eq $startedBy "housing-rollout") (eq $canaryOf $fullname) (not (has $name $declared)) (not (has $name $wasDeclared)) -}}
{{- $predictor := dig "spec" "predictor" dict $isvc -}}
{{- $predictorArgs := (index ($predictor.containers | default (list dict)) 0).args | default list -}}
{{- $model := dict
      "storageUri" (include "housing.argValue" (dict "args" $predictorArgs "flag" "--storage_uri"))
      "sha256" (include "housing.argValue" (dict "args" $predictorArgs "flag" "--expected_sha256"))
      "version" (dig "annotations" "housing.kserve.dev/model-version" "" $predictor) -}}
{{- $canaries = append $canaries (dict "name" $name "trafficPercent" (atoi $percent) "model" $model "startedBy" $startedBy) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $canaries -}}
{{- end -}}

{{/* The value of a `--flag value` or `--flag=value` arg: (dict "args" ARGS "flag" "--storage_uri"). */}}
{{- define "housing.argValue" -}}
{{- $found := "" -}}
{{- range $index, $arg := .args -}}
{{- if and (not $found) (hasPrefix (printf "%s=" $.flag) $arg) -}}
{{- $found = trimPrefix (printf "%s=" $.flag) $arg -}}
{{- else if and (not $found) (eq $arg $.flag) (lt (add1 $index) (len $.args)) -}}
{{- $found = index $.args (add1 $index) -}}
{{- end -}}
{{- end -}}
{{- $found -}}
{{- end -}}

{{/* The names of the canaries the values declare, comma-separated. */}}
{{- define "housing.declaredCanaries" -}}
{{- $names := list -}}
{{- range .Values.rollout.canaries }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end -}}
