{{/*
The operator's API permissions, mirroring operator/voicefleet_operator/rbac.py (a test checks
that the rendered chart grants exactly PERMISSIONS for each mode, nothing more). Exact verbs
and resources, never a wildcard.
*/}}

{{/* Namespace-scoped rules: a Role per watched namespace, or the ClusterRole for all. */}}
{{- define "voicefleet.rbac.namespaceRules" -}}
# Watch VoiceServices; kopf patches its progress annotations and finalizer.
- apiGroups: ["voicefleet.io"]
  resources: ["voiceservices"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written through the status subresource only.
- apiGroups: ["voicefleet.io"]
  resources: ["voiceservices/status"]
  verbs: ["patch"]
# The children of each VoiceService: its pods, its endpoint, its disruption budget.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The builtin autoscaler applies the replica count through the scale subresource.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Optional children, applied only when the cluster serves their API and the spec asks for
# them; listed and deleted (only those the VoiceService owns) once it no longer does.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "create", "patch", "delete"]
# The builtin autoscaler reads pod metrics and sets pod-deletion-cost before scaling down;
# GPU fallback reads the pods' PodScheduled condition.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Events on VoiceServices, through either events API.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- if and .Values.peering.enabled (not (include "voicefleet.clusterwide" .)) }}
# Replicas watching namespaces agree through a KopfPeering on which one acts.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Cluster-scoped rules: always in a ClusterRole. */}}
{{- define "voicefleet.rbac.clusterRules" -}}
# kopf discovers the resources it serves by watching CRDs.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if include "voicefleet.clusterwide" . }}
{{- if .Values.peering.enabled }}
# Replicas watching all namespaces agree through a ClusterKopfPeering on which one acts.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- else }}
# Watching named namespaces, kopf lists and watches Namespaces to follow them appearing and
# going (cluster-wide, it watches the resources across all namespaces instead).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
