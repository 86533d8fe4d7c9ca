{{/* Names: the release's, then one per component. */}}
{{- define "palisade.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- define "palisade.operator" -}}{{ include "palisade.fullname" . }}-operator{{- end -}}
{{- define "palisade.agent" -}}{{ include "palisade.fullname" . }}-agent{{- end -}}
{{- define "palisade.webhook" -}}{{ include "palisade.fullname" . }}-webhook{{- end -}}
{{- define "palisade.uninstall" -}}{{ include "palisade.fullname" . }}-uninstall{{- end -}}

{{- define "palisade.labels" -}}
app.kubernetes.io/name: palisade
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "palisade.selector" -}}
app.kubernetes.io/name: palisade
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "palisade.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}

{{/* The plan stream's address as agents dial it, and the names its certificate holds. */}}
{{- define "palisade.operatorHost" -}}
{{- if .Values.operator.clusterIP -}}{{ .Values.operator.clusterIP }}{{- else -}}{{ include "palisade.operator" . }}.{{ .Release.Namespace }}.svc{{- end -}}
{{- end -}}
{{- define "palisade.serviceNames" -}}
{{- $name := index . 0 -}}{{- $ns := index . 1 -}}
{{- list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) | toJson -}}
{{- end -}}

{{/* Containers run as nobody, read-only, with nothing but what they need. */}}
{{- define "palisade.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
