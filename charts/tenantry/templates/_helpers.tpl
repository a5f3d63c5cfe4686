{{- define "tenantry.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object's name: the release's, or "<release>-tenantry". */}}
{{- define "tenantry.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tenantry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tenantry
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "api"). */}}
{{- define "tenantry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenantry.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tenantry.componentLabels" -}}
{{ include "tenantry.labels" .root }}
{{ include "tenantry.selectorLabels" . }}
{{- end }}

{{- define "tenantry.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{/* The Secret (name) holding one kind of credential: the user's own, or the chart's. */}}
{{- define "tenantry.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "tenantry.fullname" .)) }}
{{- end }}
{{- define "tenantry.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "tenantry.fullname" .)) }}
{{- end }}
{{- define "tenantry.tokensSecret" -}}
{{- .Values.tokens.existingSecret | default (printf "%s-api-tokens" (include "tenantry.fullname" .)) }}
{{- end }}
{{- define "tenantry.billingSecret" -}}
{{- .Values.billing.existingSecret | default (printf "%s-billing" (include "tenantry.fullname" .)) }}
{{- end }}

{{- define "tenantry.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "tenantry.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities: {drop: [ALL]}
{{- end }}

{{/* Settings as env entries from a map of TENANTRY_* names to strings. */}}
{{- define "tenantry.env" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
