{{- define "kalypso-argocd.labels" -}}
app.kubernetes.io/part-of: kalypso
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Automated sync with prune and self-heal, plus retry with backoff: shared by every Application. */}}
{{- define "kalypso-argocd.syncPolicy" -}}
automated:
  prune: true
  selfHeal: true
retry:
  {{- toYaml .root.Values.retry | nindent 2 }}
syncOptions:
  - CreateNamespace=true
  - PruneLast=true
  {{- if .app.serverSideApply }}
  - ServerSideApply=true
  {{- end }}
  {{- if .app.skipDryRunOnMissing }}
  - SkipDryRunOnMissingResource=true
  {{- end }}
  {{- if or .app.ignoreWebhookCaBundles .app.ignoreCrdCaBundles .app.ignoreWebhookFailurePolicy }}
  - RespectIgnoreDifferences=true
  {{- end }}
{{- with .app.namespaceLabels }}
managedNamespaceMetadata:
  labels:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "kalypso-argocd.ignoreDifferences" -}}
{{- $webhookPaths := list -}}
{{- if .ignoreWebhookCaBundles }}{{ $webhookPaths = append $webhookPaths ".webhooks[]?.clientConfig.caBundle" }}{{ end -}}
{{- if .ignoreWebhookFailurePolicy }}{{ $webhookPaths = append $webhookPaths ".webhooks[]?.failurePolicy" }}{{ end -}}
{{- if or $webhookPaths .ignoreCrdCaBundles }}
ignoreDifferences:
  {{- if $webhookPaths }}
  {{- range list "MutatingWebhookConfiguration" "ValidatingWebhookConfiguration" }}
  - group: admissionregistration.k8s.io
    kind: {{ . }}
    jqPathExpressions: {{ toJson $webhookPaths }}
  {{- end }}
  {{- end }}
  {{- if .ignoreCrdCaBundles }}
  - group: apiextensions.k8s.io
    kind: CustomResourceDefinition
    jsonPointers:
      - /spec/conversion/webhook/clientConfig/caBundle
  {{- end }}
{{- end }}
{{- end }}
