{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "candela.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "candela.fullname" -}}
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

{{/* Labels that select the operator's pods. */}}
{{- define "candela.selectorLabels" -}}
app.kubernetes.io/name: {{ include "candela.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "candela.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "candela.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: candela
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels kube-prometheus-stack selects monitoring objects by, as a map. */}}
{{- define "candela.monitoringLabelMap" -}}
{{- $labels := dict }}
{{- if .Values.monitoring.release }}
{{- $_ := set $labels "release" .Values.monitoring.release }}
{{- end }}
{{- range $k, $v := .Values.monitoring.labels }}
{{- $_ := set $labels $k $v }}
{{- end }}
{{- toYaml $labels }}
{{- end }}

{{- define "candela.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "candela.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the Alertmanager webhook token (key `token`). */}}
{{- define "candela.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "candela.fullname" .)) .Values.alertsWebhook.existingSecret }}
{{- end }}

{{/* In-cluster URL of the operator's Alertmanager webhook (its own port). */}}
{{- define "candela.webhookURL" -}}
{{- printf "%s://%s:%v/alertmanager" (ternary "https" "http" .Values.tls.enabled) (include "candela.serverName" .) .Values.alertsWebhook.port }}
{{- end }}

{{/*
The Alertmanager route and receiver for the alerts autoscaling backend. The operator's
scale-up alerts (only generated for InferenceDeployments whose backend is `alerts`) carry
candela_autoscaling="scale-up" and severity "none": they go to the operator alone, grouped
per InferenceDeployment, since each notification must list all of one target's alerts.
While one fires, Alertmanager resends every repeat_interval and each resend may add a step
(at most one per cooldownSeconds): keep repeat_interval near the cooldown. send_resolved
is required: the resolved notification starts the scale-down cooldown.
*/}}
{{- define "candela.alertmanagerSnippet" -}}
route:
  routes:
    - receiver: candela-operator
      matchers:
        - candela_autoscaling="scale-up"
      group_by: [namespace, inference_deployment]
      group_wait: 10s
      group_interval: 1m
      repeat_interval: 5m
receivers:
  - name: candela-operator
    webhook_configs:
      - url: {{ include "candela.webhookURL" . }}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: /etc/alertmanager/secrets/{{ include "candela.webhookSecretName" . }}/token
          {{- if .Values.tls.enabled }}
          tls_config:
            ca_file: /etc/alertmanager/secrets/{{ include "candela.caCertSecretName" . }}/ca.crt
            server_name: {{ include "candela.serverName" . }}
          {{- end }}
{{- end }}

{{/* The Secret with the operator's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "candela.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "candela.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/* The Secret with the client certificate Prometheus presents to the operator. */}}
{{- define "candela.tlsClientSecretName" -}}
{{- default (printf "%s-prometheus-client" (include "candela.fullname" .)) .Values.tls.clientSecret }}
{{- end }}

{{/* The name the operator's certificate carries and its clients verify. */}}
{{- define "candela.serverName" -}}
{{- printf "%s.%s.svc" (include "candela.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The Secret with only ca.crt, for Alertmanager to verify the webhook. */}}
{{- define "candela.caCertSecretName" -}}
{{- printf "%s-ca-cert" (include "candela.fullname" .) }}
{{- end }}

{{/* "true" when the quick-start CA's ClusterIssuer is rendered (cert-manager served). */}}
{{- define "candela.caIssuerRendered" -}}
{{- if and .Values.selfSignedCA.enabled .Values.selfSignedCA.clusterIssuer (.Capabilities.APIVersions.Has "cert-manager.io/v1") }}true{{ end }}
{{- end }}

{{/* The operator's --cert-manager-issuer ("" = none). */}}
{{- define "candela.certManagerIssuer" -}}
{{- if .Values.certManager.issuer }}
{{- .Values.certManager.issuer }}
{{- else if include "candela.caIssuerRendered" . }}
{{- printf "ClusterIssuer/%s-ca" (include "candela.fullname" .) }}
{{- end }}
{{- end }}
