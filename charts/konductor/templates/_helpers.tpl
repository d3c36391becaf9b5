{{/* Names and labels shared by every template (the generated ones too). */}}

{{- define "konductor.name" -}}
konductor-operator
{{- end }}

{{- define "konductor.chart" -}}
{{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "konductor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "konductor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "konductor.labels" -}}
{{ include "konductor.selectorLabels" . }}
app.kubernetes.io/part-of: konductor
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "konductor.chart" . }}
{{- end }}

{{- define "konductor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "konductor.name" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | required "serviceAccount.name is required when serviceAccount.create is false" }}
{{- end -}}
{{- end }}

{{- define "konductor.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}
