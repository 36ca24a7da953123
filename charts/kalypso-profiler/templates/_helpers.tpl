{{- define "kalypso-profiler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Same rule as most charts: override, else the release name if it holds the chart name, else both. */}}
{{- define "kalypso-profiler.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kalypso-profiler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kalypso-profiler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kalypso-profiler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kalypso-profiler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: kalypso
{{- end }}

{{- define "kalypso-profiler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kalypso-profiler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The capability list, documented in values.yaml and docs/deploy.md: nothing else is added. */}}
{{- define "kalypso-profiler.capabilities" -}}
{{- $caps := list "BPF" "PERFMON" "SYS_PTRACE" "SYS_RESOURCE" -}}
{{- if .Values.capabilities.kernelSymbols }}{{ $caps = append $caps "SYSLOG" }}{{ end -}}
{{- if .Values.capabilities.legacyKernel }}{{ $caps = append $caps "SYS_ADMIN" }}{{ end -}}
{{- toJson $caps -}}
{{- end }}
