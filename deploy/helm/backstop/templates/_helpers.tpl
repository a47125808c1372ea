{{- define "backstop.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "backstop.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "backstop.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "backstop.serviceAccount" -}}
{{- default (include "backstop.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "backstop.secret" -}}
{{- default (include "backstop.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Refuse what cannot work: several agents on one SQLite file. */}}
{{- define "backstop.check" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.ledger.postgres) -}}
{{- fail "replicas > 1 share one ledger: set ledger.postgres=true and BACKSTOP_LEDGER__URL to a postgres:// URL" -}}
{{- end -}}
{{- $url := index .Values.secrets.values "BACKSTOP_LEDGER__URL" | default "" -}}
{{- if and .Values.ledger.postgres (not .Values.secrets.existingSecret) (not (hasPrefix "postgres" $url)) -}}
{{- fail "ledger.postgres=true needs secrets.values.BACKSTOP_LEDGER__URL (postgres://…) or secrets.existingSecret" -}}
{{- end -}}
{{- end -}}
