{{/* The label that the gateway chart puts on its pods: its name without the "istio-" prefix. */}}
{{- define "kalypso-istio.gatewaySelector" -}}
{{ .Values.gateway.name | default "istio-ingressgateway" | trimPrefix "istio-" }}
{{- end }}
