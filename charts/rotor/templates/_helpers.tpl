{{/* Chart name, overridable. */}}
{{- define "rotor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: release name, plus the chart name unless it is already part of it. */}}
{{- define "rotor.fullname" -}}
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

{{- define "rotor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: never change them, a Deployment's selector is immutable. */}}
{{- define "rotor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rotor.labels" -}}
helm.sh/chart: {{ include "rotor.chart" . }}
{{ include "rotor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rotor
{{- end }}

{{/* Labels of the `helm test` Pod: deliberately not matching rotor's selector. */}}
{{- define "rotor.testLabels" -}}
helm.sh/chart: {{ include "rotor.chart" . }}
app.kubernetes.io/name: {{ include "rotor.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rotor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rotor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "rotor.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "rotor.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{/* Port of the issuer Service: 443 for HTTPS, 80 for plain HTTP, unless set. */}}
{{- define "rotor.servicePort" -}}
{{- if kindIs "invalid" .Values.service.port }}
{{- ternary 80 443 .Values.tls.insecureHTTP }}
{{- else }}
{{- .Values.service.port }}
{{- end }}
{{- end }}

{{/* The Service's in-cluster host name. */}}
{{- define "rotor.serviceHost" -}}
{{- printf "%s.%s.svc" (include "rotor.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
The issuer URL: issuer.url, or the in-cluster Service URL. Fails on a URL that
rotor would reject or that clients could not match.
*/}}
{{- define "rotor.issuerURL" -}}
{{- $scheme := ternary "http" "https" .Values.tls.insecureHTTP }}
{{- if .Values.issuer.url }}
{{- $url := .Values.issuer.url }}
{{- if not (regexMatch "^https?://[^/?#@\\s]+$" $url) }}
{{- fail (printf "issuer.url %q must be http(s)://host[:port] with no path, query, fragment or trailing slash" $url) }}
{{- end }}
{{- if and (hasPrefix "http://" $url) (not .Values.tls.insecureHTTP) }}
{{- fail (printf "issuer.url %q is plain http but tls.insecureHTTP is false: use https, or set tls.insecureHTTP=true for development" $url) }}
{{- end }}
{{- $url }}
{{- else }}
{{- $port := include "rotor.servicePort" . | int }}
{{- $default := ternary 80 443 .Values.tls.insecureHTTP }}
{{- if eq $port $default }}
{{- printf "%s://%s" $scheme (include "rotor.serviceHost" .) }}
{{- else }}
{{- printf "%s://%s:%d" $scheme (include "rotor.serviceHost" .) $port }}
{{- end }}
{{- end }}
{{- end }}

{{/* Host name of the issuer URL, without port. */}}
{{- define "rotor.issuerHostname" -}}
{{- (urlParse (include "rotor.issuerURL" .)).host | regexFind "^[^:]+" }}
{{- end }}

{{/* host:port of the issuer URL, with the scheme's default port made explicit. */}}
{{- define "rotor.issuerHostPort" -}}
{{- $u := urlParse (include "rotor.issuerURL" .) }}
{{- if contains ":" $u.host }}
{{- $u.host }}
{{- else }}
{{- printf "%s:%d" $u.host (ternary 80 443 (eq $u.scheme "http")) }}
{{- end }}
{{- end }}

{{/* --token-exchange-allow: the patterns when exchange is enabled, else empty (off). */}}
{{- define "rotor.exchangeAllow" -}}
{{- if .Values.exchange.enabled }}
{{- if empty .Values.exchange.allow }}
{{- fail "exchange.enabled needs exchange.allow: the <namespace>/<serviceaccount> patterns allowed to exchange" }}
{{- end }}
{{- join "," .Values.exchange.allow }}
{{- end }}
{{- end }}

{{/* Whether rotor validates ServiceAccount tokens (TokenReview): exchange or introspection. */}}
{{- define "rotor.needsTokenReview" -}}
{{- if or .Values.exchange.enabled (not (empty .Values.introspection.allow)) (include "rotor.secureMetrics" .) }}true{{ end }}
{{- end }}

{{- /* Metrics over HTTPS for callers the API server authenticates and authorizes. */ -}}
{{- define "rotor.secureMetrics" -}}
{{- if and .Values.metrics.enabled .Values.metrics.secure }}true{{ end }}
{{- end }}

{{- /*
Whether the API server serves OAuthClients as the chart is rendered: "true"
on upgrades and on installs into a cluster that has rotor's CRDs, empty when
this release is about to create the CRD (see oauthclients.yaml).
*/ -}}
{{- define "rotor.clientsServed" -}}
{{- if .Capabilities.APIVersions.Has "identity.rotor.dev/v1alpha1/OAuthClient" }}true{{ end }}
{{- end }}

{{- /*
The clients this release manages as ordinary objects, comma-separated and
sorted: recorded on the Deployment, so that the next render knows which live
OAuthClients helm is about to adopt rather than update.
*/ -}}
{{- define "rotor.releaseClients" -}}
{{- if include "rotor.clientsServed" . }}
{{- keys (.Values.clients | default dict) | sortAlpha | join "," }}
{{- end }}
{{- end }}
