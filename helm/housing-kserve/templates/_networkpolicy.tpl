{{/* Building blocks of the NetworkPolicies. */}}
{{- define "housing.np.namespaces" -}}
{{- range . }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . }}
{{- end }}
{{- end -}}
{{- define "housing.np.ports" -}}
{{- range . }}
- {protocol: TCP, port: {{ . }}}
{{- end }}
{{- end -}}
{{- define "housing.np.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ . }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}
{{- define "housing.np.https" -}}
- to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  ports:
    - {protocol: TCP, port: 443}
{{- end -}}
{{- define "housing.np.prometheus" -}}
- from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ . }}
  ports:
    - {protocol: TCP, port: 8080}
{{- end -}}
{{/* Knative's autoscaler scrapes each revision pod's queue-proxy on 9090: (dict "knative" BOOL "namespace" NS) */}}
{{- define "housing.np.knativeAutoscaler" -}}
{{- if .knative -}}
- from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .namespace }}
  ports:
    - {protocol: TCP, port: 9090}
{{- end -}}
{{- end -}}
