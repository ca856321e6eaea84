{{/* The chart's name, shortened to fit a DNS label. */}}
{{- define "voicefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of every object: the release name, plus the chart name unless it is in it. */}}
{{- define "voicefleet.fullname" -}}
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

{{- define "voicefleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels that pick the operator pods; they never change across upgrades. The name carries
"-operator" because the VoiceService pods are app.kubernetes.io/name=voicefleet with their
own instance: a VoiceService named like the release must not select the operator pods.
*/}}
{{- define "voicefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicefleet.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "voicefleet.labels" -}}
helm.sh/chart: {{ include "voicefleet.chart" . }}
{{ include "voicefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voicefleet
{{- end }}

{{- define "voicefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voicefleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "voicefleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the operator serves every namespace (cluster-wide RBAC and peering). */}}
{{- define "voicefleet.clusterwide" -}}
{{- if empty .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/* The operator's command-line arguments after `voicefleet operator`. */}}
{{- define "voicefleet.args" -}}
{{- if include "voicefleet.clusterwide" . }}
- --all-namespaces
{{- else }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- end }}
{{- if not .Values.peering.enabled }}
- --standalone
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.operator.healthPort }}{{ .Values.operator.healthPath }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Labels for ServiceMonitor, PodMonitor and PrometheusRule objects. */}}
{{- define "voicefleet.monitoringLabels" -}}
{{ include "voicefleet.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The peering object's name, passed to the operator as VOICEFLEET_OPERATOR_PEERING_NAME. */}}
{{- define "voicefleet.peeringName" -}}
{{- .Values.peering.name }}
{{- end }}

{{/* Peering objects are created after their CRDs exist and are kept across upgrades. */}}
{{- define "voicefleet.peeringHook" -}}
helm.sh/hook: post-install,post-upgrade
helm.sh/hook-weight: "0"
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}
