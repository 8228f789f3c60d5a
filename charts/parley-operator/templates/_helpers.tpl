{{/*
The release's full name, which names every object of the chart: the
release name with `-operator` appended unless it already ends so, cut to
the 63 characters of a DNS label.
*/}}
{{- define "parley-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" (trimSuffix "-operator" .Release.Name) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Labels that select the operator's pods. They must never change after the
first install, because a Deployment's selector is immutable.
*/}}
{{- define "parley-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object of the chart.
*/}}
{{- define "parley-operator.labels" -}}
{{ include "parley-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: parley
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "parley-operator.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "parley-operator.fullname" .) -}}
{{- end -}}

{{/*
Builds an image reference from a dict with `image` (a value with
`repository`, `tag` and `digest`) and `appVersion`: `repository@digest`
when the digest is set, else `repository:tag`, with the appVersion as the
default tag.
*/}}
{{- define "parley-operator.imageReference" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (toString ($image.tag | default .appVersion)) -}}
{{- end -}}
{{- end -}}
