{{/*
Names, labels and images shared by every template. Helpers are prefixed with the chart name.
*/}}

{{- define "kubemill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemill.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of a component's objects: <fullname>-<component>, at most 63 characters. */}}
{{- define "kubemill.componentName" -}}
{{- printf "%s-%s" (include "kubemill.fullname" .context) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemill.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemill.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; call with (dict "context" $ "component" "operator"). */}}
{{- define "kubemill.labels" -}}
helm.sh/chart: {{ include "kubemill.chart" .context }}
{{ include "kubemill.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: kubemill
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
{{- with .context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kubemill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubemill.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "kubemill.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "kubemill.componentName" (dict "context" . "component" "operator")) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubemill.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{/* The webhook: its Service, the Secret holding its certificate, and the DNS name the certificate is for. */}}
{{- define "kubemill.webhook.serviceName" -}}
{{- include "kubemill.componentName" (dict "context" . "component" "webhook") -}}
{{- end -}}

{{- define "kubemill.webhook.secretName" -}}
{{- include "kubemill.componentName" (dict "context" . "component" "webhook-tls") -}}
{{- end -}}

{{- define "kubemill.webhook.host" -}}
{{- printf "%s.%s.svc" (include "kubemill.webhook.serviceName" .) (include "kubemill.namespace" .) -}}
{{- end -}}

{{/* A Prometheus duration (`90s`, `30m`, `24h`, `2d`) in seconds, for comparisons in alert expressions. */}}
{{- define "kubemill.durationSeconds" -}}
{{- $d := toString . -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 -}}
{{- $unit := substr (int (sub (len $d) 1)) (len $d) $d -}}
{{- if hasKey $units $unit -}}
{{- mul (trimSuffix $unit $d | int) (get $units $unit) -}}
{{- else -}}
{{- $d | int -}}
{{- end -}}
{{- end -}}

{{/* The resume URLs' Service and the base URL the operator advertises (KUBEMILL_RESUME_URL). */}}
{{- define "kubemill.resume.serviceName" -}}
{{- include "kubemill.componentName" (dict "context" . "component" "resume") -}}
{{- end -}}

{{- define "kubemill.resume.url" -}}
{{- $resume := .Values.resumeUrls -}}
{{- if $resume.url -}}
{{- $resume.url | trimSuffix "/" -}}
{{- else if and $resume.ingress.enabled $resume.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" (not (empty $resume.ingress.tlsSecretName))) $resume.ingress.host -}}
{{- else -}}
{{- $host := printf "http://%s.%s.svc" (include "kubemill.resume.serviceName" .) (include "kubemill.namespace" .) -}}
{{- if eq (int $resume.service.port) 80 -}}
{{- $host -}}
{{- else -}}
{{- printf "%s:%d" $host (int $resume.service.port) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The UI: its image (default: the operator's) and ServiceAccount. */}}
{{- define "kubemill.ui.image" -}}
{{- if .Values.ui.image.repository -}}
{{- printf "%s:%s" .Values.ui.image.repository (default .Chart.AppVersion .Values.ui.image.tag) -}}
{{- else -}}
{{- printf "%s:%s" .Values.operator.image.repository (default (default .Chart.AppVersion .Values.operator.image.tag) .Values.ui.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kubemill.ui.serviceAccountName" -}}
{{- if .Values.ui.serviceAccount.create -}}
{{- default (include "kubemill.componentName" (dict "context" . "component" "ui")) .Values.ui.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.ui.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An Ingress to one Service port; call with (dict "context" $ "component" "ui" "ingress" $values "service" $name "port" "http" "path" "/"). */}}
{{- define "kubemill.ingress" -}}
{{- $ingress := .ingress -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "kubemill.componentName" (dict "context" .context "component" .component) }}
  namespace: {{ include "kubemill.namespace" .context }}
  labels:
    {{- include "kubemill.labels" (dict "context" .context "component" .component) | nindent 4 }}
  {{- with $ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- if $ingress.tlsSecretName }}
  tls:
    - hosts: [{{ required (printf "%s: an Ingress with TLS needs a host" .component) $ingress.host | quote }}]
      secretName: {{ $ingress.tlsSecretName }}
  {{- end }}
  rules:
    - {{- with $ingress.host }}
      host: {{ . | quote }}
      {{- end }}
      http:
        paths:
          - path: {{ .path }}
            pathType: Prefix
            backend:
              service:
                name: {{ .service }}
                port:
                  name: {{ .port }}
{{- end -}}
