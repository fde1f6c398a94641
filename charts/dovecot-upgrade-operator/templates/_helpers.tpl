{{- define "dbu.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dbu.labels" -}}
app.kubernetes.io/name: dovecot-upgrade-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dbu.selector" -}}
app.kubernetes.io/name: dovecot-upgrade-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dbu.watchNamespace" -}}
{{- .Values.watchNamespace | default .Release.Namespace -}}
{{- end -}}
