{{/* The ConfigMap's data; the migration Job (a hook, run before the ConfigMap exists) gets the same as env. */}}
{{- define "nexanest.settingsData" -}}
NEXANEST_KAFKA__BOOTSTRAP_SERVERS: {{ include "nexanest.bootstrapServers" . | quote }}
NEXANEST_KAFKA__PARTITIONS: {{ include "nexanest.partitions" . | quote }}
NEXANEST_KAFKA__TICKS_TOPIC: {{ .Values.kafka.ticksTopic | quote }}
NEXANEST_KAFKA__DEAD_LETTER_TOPIC: {{ .Values.kafka.deadLetterTopic | quote }}
NEXANEST_KAFKA__EVENTS_TOPIC: {{ .Values.kafka.eventsTopic | quote }}
NEXANEST_KAFKA__BACKFILL_TOPIC: {{ .Values.kafka.backfillTopic | quote }}
NEXANEST_KAFKA__REPLICATION_FACTOR: {{ ternary .Values.kafka.strimzi.replicationFactor .Values.kafka.replicationFactor .Values.kafka.strimzi.enabled | quote }}
NEXANEST_KAFKA__CONSUMER_GROUP: {{ .Values.kafka.consumerGroup | quote }}
NEXANEST_SERVICES__HOST: "0.0.0.0"
NEXANEST_METRICS__HOST: "0.0.0.0"
NEXANEST_METRICS__CONSUMER_PORT: {{ .Values.consumer.metricsPort | quote }}
NEXANEST_METRICS__PRODUCER_PORT: {{ .Values.producer.metricsPort | quote }}
{{- range $name, $svc := .Values.services }}
NEXANEST_SERVICES__{{ $name | upper | replace "-" "_" }}_PORT: {{ $svc.port | quote }}
{{- end }}
# `nexanest status` is not run in the cluster; no Prometheus or Alertmanager to probe.
NEXANEST_PROMETHEUS_URL: ""
NEXANEST_ALERTMANAGER_URL: ""
{{- range $k, $v := .Values.settings }}
{{- if not (hasPrefix "NEXANEST_" $k) }}{{ fail (printf "settings.%s: only NEXANEST_* settings belong in the ConfigMap" $k) }}{{ end }}
{{- if regexMatch "(DSN|URL|SECRET|PASSWORD)$" $k }}{{ if not (has $k (list "NEXANEST_PROMETHEUS_URL" "NEXANEST_ALERTMANAGER_URL")) }}{{ fail (printf "settings.%s looks like a secret: put it in the Secret (secrets.existingSecret)" $k) }}{{ end }}{{ end }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}

{{/* The migration Job's env: the settings inline, and the owner roles' DSNs from the Secret. */}}
{{- define "nexanest.migrateEnv" -}}
{{- range $k, $v := include "nexanest.settingsData" .root | fromYaml }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{ include "nexanest.secretEnv" . }}
{{- end }}
