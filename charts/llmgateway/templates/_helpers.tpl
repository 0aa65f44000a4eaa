{{/* Names are truncated to 63 characters: the DNS label limit of Services and label values. */}}
{{- define "llmgateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmgateway.fullname" -}}
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

{{- define "llmgateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmgateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "llmgateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "llmgateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmgateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "llmgateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmgateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llmgateway.webhookName" -}}
{{- printf "%s-webhook" (include "llmgateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmgateway.webhookCertSecret" -}}
{{- printf "%s-webhook-tls" (include "llmgateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped objects (webhook configuration, ClusterRole, peering) carry the release namespace in their name:
     two releases of the same name in different namespaces must not fight over them. */}}
{{- define "llmgateway.clusterName" -}}
{{- printf "%s-%s" (include "llmgateway.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmgateway.gatewayRoleName" -}}
{{- printf "%s-gateway" (include "llmgateway.clusterName" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "llmgateway.mwcName" -}}
{{- include "llmgateway.clusterName" . }}
{{- end }}

{{- define "llmgateway.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "llmgateway.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) }}
{{- end }}

{{/* How the webhook certificate is provisioned: certManager | job | helm. */}}
{{- define "llmgateway.certSource" -}}
{{- if .Values.certManager.enabled }}certManager{{ else if .Values.webhook.certgenJob.enabled }}job{{ else }}helm{{ end }}
{{- end }}

{{- define "llmgateway.restrictedContainerSecurity" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
