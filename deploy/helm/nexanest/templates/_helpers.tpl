{{/* Names, labels and the per-component facts the templates share. */}}

{{- define "nexanest.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nexanest.fullname" -}}
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

{{/* "nexanest.component" (dict "root" $ "name" "auth"): the resource name of a component. */}}
{{- define "nexanest.component" -}}
{{- printf "%s-%s" (include "nexanest.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nexanest.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "nexanest.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nexanest
{{- end }}

{{/* "nexanest.selector" (dict "root" $ "name" "auth") */}}
{{- define "nexanest.selector" -}}
app.kubernetes.io/name: {{ include "nexanest.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "nexanest.componentLabels" -}}
{{ include "nexanest.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "nexanest.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "nexanest.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nexanest.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nexanest.secretName" -}}
{{- default (printf "%s-secrets" (include "nexanest.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "nexanest.configMapName" -}}
{{- printf "%s-settings" (include "nexanest.fullname" .) }}
{{- end }}

{{/*
The one partition count, and the consumer's replica ceiling derived from it:
autoscaling.maxReplicas when set (never above the partitions), else the partitions.
*/}}
{{- define "nexanest.partitions" -}}
{{- $p := int .Values.kafka.partitions }}
{{- if lt $p 1 }}{{ fail "kafka.partitions must be at least 1" }}{{ end }}
{{- $p }}
{{- end }}

{{- define "nexanest.consumerMaxReplicas" -}}
{{- $p := int (include "nexanest.partitions" .) }}
{{- $m := .Values.consumer.autoscaling.maxReplicas }}
{{- if kindIs "invalid" $m }}{{ $p }}{{ else }}
{{- if gt (int $m) $p }}{{ fail (printf "consumer.autoscaling.maxReplicas (%d) exceeds kafka.partitions (%d): a consumer beyond the partition count holds no partition" (int $m) $p) }}{{ end }}
{{- int $m }}
{{- end }}
{{- end }}

{{- define "nexanest.bootstrapServers" -}}
{{- if .Values.kafka.strimzi.enabled }}
{{- printf "%s-kafka-bootstrap:%d" .Values.kafka.strimzi.clusterName (int .Values.stores.kafka.port) }}
{{- else }}
{{- .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{/*
What each component needs: the stores its NetworkPolicy lets it reach, and the
Secret keys (NEXANEST_* variables) handed to it; no component sees another's
credentials. Read from pipeline/settings_services.py and settings_connections.py: the services' roles
(ServicesSettings.dsns), the consumer's ingest role, the owner roles for migrate.
*/}}
{{- define "nexanest.needs" -}}
auth:
  stores: [postgres, redis]
  secrets: [NEXANEST_SERVICES__AUTH_DSN, NEXANEST_REDIS__URL, NEXANEST_SERVICES__TOKEN_SECRET]
portfolio:
  stores: [postgres, timescale, redis]
  secrets: [NEXANEST_SERVICES__PORTFOLIO_DSN, NEXANEST_SERVICES__PORTFOLIO_SNAPSHOTS_DSN, NEXANEST_REDIS__URL, NEXANEST_SERVICES__TOKEN_SECRET]
market-data:
  stores: [timescale, redis]
  secrets: [NEXANEST_SERVICES__MARKET_DATA_DSN, NEXANEST_REDIS__URL, NEXANEST_SERVICES__TOKEN_SECRET]
notifications:
  stores: [postgres, redis]
  secrets: [NEXANEST_SERVICES__NOTIFICATIONS_DSN, NEXANEST_REDIS__URL, NEXANEST_SERVICES__TOKEN_SECRET]
analytics:
  stores: [postgres, timescale, redis]
  secrets: [NEXANEST_SERVICES__ANALYTICS_DSN, NEXANEST_SERVICES__ANALYTICS_TIMESCALE_DSN, NEXANEST_REDIS__URL, NEXANEST_SERVICES__TOKEN_SECRET]
consumer:
  stores: [timescale, redis, kafka]
  secrets: [NEXANEST_TIMESCALE__DSN, NEXANEST_REDIS__URL]
producer:
  stores: [kafka]
  secrets: []
migrate:
  stores: [postgres, timescale]
  secrets: [NEXANEST_TIMESCALE__ADMIN_DSN, NEXANEST_POSTGRES__AUTH_DSN, NEXANEST_POSTGRES__PORTFOLIO_DSN, NEXANEST_POSTGRES__ANALYTICS_DSN, NEXANEST_POSTGRES__NOTIFICATIONS_DSN]
{{- end }}

{{/* "nexanest.secretEnv" (dict "root" $ "name" "auth"): env entries from the Secret. */}}
{{- define "nexanest.secretEnv" -}}
{{- $needs := get (include "nexanest.needs" .root | fromYaml) .name }}
{{- range $key := $needs.secrets }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "nexanest.secretName" $.root }}
      key: {{ $key }}
{{- end }}
{{- end }}

{{/* "nexanest.pod" (dict "root" $ "name" "auth"): pod-level settings shared by every workload. */}}
{{- define "nexanest.podCommon" -}}
serviceAccountName: {{ include "nexanest.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if ne .root.Values.antiAffinity "none" }}
affinity:
  podAntiAffinity:
    {{- if eq .root.Values.antiAffinity "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "nexanest.selector" . | nindent 12 }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "nexanest.selector" . | nindent 14 }}
    {{- end }}
{{- end }}
volumes:
  - name: tmp
    emptyDir: {}
{{- if include "nexanest.kafkaCa" . }}
  - name: kafka-ca
    secret:
      secretName: {{ .root.Values.kafka.external.caSecret }}
      items: [{key: ca.crt, path: ca.crt}]
{{- end }}
{{- end }}

{{/* "true" when the component (producer, consumer) gets the external cluster's CA mounted. */}}
{{- define "nexanest.kafkaCa" -}}
{{- $e := .root.Values.kafka.external }}
{{- if and (not .root.Values.kafka.strimzi.enabled) $e.caSecret (has .name (list "producer" "consumer")) }}
{{- if ne $e.securityProtocol "SASL_SSL" }}{{ fail "kafka.external.caSecret: only with securityProtocol SASL_SSL" }}{{ end -}}
true
{{- end }}
{{- end }}

{{/* "true" when the external cluster (not Strimzi) wants SASL. */}}
{{- define "nexanest.externalSasl" -}}
{{- $e := .Values.kafka.external }}
{{- if not (has $e.securityProtocol (list "PLAINTEXT" "SASL_PLAINTEXT" "SASL_SSL")) }}{{ fail "kafka.external.securityProtocol: PLAINTEXT, SASL_PLAINTEXT or SASL_SSL" }}{{ end }}
{{- if and (not .Values.kafka.strimzi.enabled) (ne $e.securityProtocol "PLAINTEXT") }}
{{- if not (has $e.saslMechanism (list "SCRAM-SHA-256" "SCRAM-SHA-512")) }}{{ fail "kafka.external.saslMechanism: SCRAM-SHA-256 or SCRAM-SHA-512" }}{{ end }}
{{- if not $e.credentialsSecret }}{{ fail "kafka.external.credentialsSecret: a SASL protocol needs the Secret with the producer's and the consumer's credentials" }}{{ end -}}
true
{{- end }}
{{- end }}

{{/* Container-level settings shared by every workload: image, security, settings, /tmp. */}}
{{- define "nexanest.containerCommon" -}}
image: {{ include "nexanest.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ include "nexanest.configMapName" .root }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if include "nexanest.kafkaCa" . }}
  - name: kafka-ca
    mountPath: /etc/nexanest/kafka-ca
    readOnly: true
{{- end }}
{{- end }}

{{/* Extra env as name: value pairs. */}}
{{- define "nexanest.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end }}

{{/*
"nexanest.kafkaAuthEnv" (dict "root" $ "name" "consumer"): the SASL/SCRAM client
settings of the consumer or producer when the Strimzi listener authenticates;
the password from the Secret the User Operator writes for its KafkaUser.
*/}}
{{- define "nexanest.kafkaAuthEnv" -}}
{{- if and .root.Values.kafka.strimzi.enabled (eq .root.Values.kafka.strimzi.authentication "scram-sha-512") }}
- name: NEXANEST_KAFKA__SECURITY_PROTOCOL
  value: SASL_PLAINTEXT
- name: NEXANEST_KAFKA__SASL_MECHANISM
  value: SCRAM-SHA-512
- name: NEXANEST_KAFKA__SASL_USERNAME
  value: {{ include "nexanest.component" . }}
- name: NEXANEST_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "nexanest.component" . }}
      key: password
{{- else if include "nexanest.externalSasl" .root }}
{{- $e := .root.Values.kafka.external }}
- name: NEXANEST_KAFKA__SECURITY_PROTOCOL
  value: {{ $e.securityProtocol }}
- name: NEXANEST_KAFKA__SASL_MECHANISM
  value: {{ $e.saslMechanism }}
- name: NEXANEST_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $e.credentialsSecret }}
      key: {{ .name }}-username
- name: NEXANEST_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $e.credentialsSecret }}
      key: {{ .name }}-password
{{- if include "nexanest.kafkaCa" . }}
- name: NEXANEST_KAFKA__SSL_CAFILE
  value: /etc/nexanest/kafka-ca/ca.crt
{{- end }}
{{- end }}
{{- end }}
