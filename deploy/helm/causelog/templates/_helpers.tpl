{{/* Names, labels and the pieces every causelog pod shares. */}}

{{- define "causelog.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "causelog.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* selector labels of one component: pass (dict "ctx" $ "component" "worker") */}}
{{- define "causelog.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "causelog.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "causelog.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "causelog.fullname" .)) -}}
{{- end -}}

{{/* Fails the render, with the reason, on values that cannot work. */}}
{{- define "causelog.validate" -}}
{{- if not .Values.kafka.bootstrap -}}
{{- fail "kafka.bootstrap is required: the bootstrap servers of your Kafka cluster" -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) (not .Values.secretEnv.CLICKHOUSE_URL) -}}
{{- fail "secretEnv.CLICKHOUSE_URL (or secrets.existingSecret holding CLICKHOUSE_URL) is required: workers share a ClickHouse server, the embedded store is one process's" -}}
{{- end -}}
{{- $partitions := int .Values.config.CAUSELOG_PARTITIONS -}}
{{- if lt $partitions 1 -}}
{{- fail "config.CAUSELOG_PARTITIONS must be a positive number" -}}
{{- end -}}
{{- if and .Values.worker.replicas (gt (int .Values.worker.replicas) $partitions) -}}
{{- fail (printf "worker.replicas=%v exceeds config.CAUSELOG_PARTITIONS=%d: a consumer group gives each partition to one worker, the rest would idle; add partitions first" .Values.worker.replicas $partitions) -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations: Prometheus scraping and a checksum that rolls pods when config or secrets change. */}}
{{- define "causelog.podAnnotations" -}}
{{- if .ctx.Values.metrics.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{ end -}}
checksum/config: {{ include (print .ctx.Template.BasePath "/configmap.yaml") .ctx | sha256sum }}
checksum/secret: {{ include (print .ctx.Template.BasePath "/secret.yaml") .ctx | sha256sum }}
{{- end -}}

{{/* The container fields every causelog process shares: image, env, mounts, security. */}}
{{- define "causelog.containerCommon" -}}
image: {{ include "causelog.image" .ctx }}
imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "causelog.fullname" .ctx }}
  - secretRef:
      name: {{ include "causelog.secretName" .ctx }}
securityContext:
  {{- toYaml .ctx.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: home
    mountPath: /var/lib/causelog
  - name: tmp
    mountPath: /tmp
  {{- if or .ctx.Values.topology .ctx.Values.identities }}
  - name: files
    mountPath: /etc/causelog
    readOnly: true
  {{- end }}
{{- end -}}

{{- define "causelog.volumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if or .Values.topology .Values.identities }}
- name: files
  configMap:
    name: {{ include "causelog.fullname" . }}-files
{{- end }}
{{- end -}}

{{/* /health probes. A worker restores the correlation state of its partitions before it
answers: the startupProbe gives a process probes.startupSeconds before liveness may restart it. */}}
{{- define "causelog.probes" -}}
startupProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: 5
  failureThreshold: {{ div .ctx.Values.probes.startupSeconds 5 }}
readinessProbe:
  httpGet:
    path: /health
    port: http
  initialDelaySeconds: {{ .ctx.Values.probes.initialDelaySeconds }}
  periodSeconds: {{ .ctx.Values.probes.periodSeconds }}
  timeoutSeconds: {{ .ctx.Values.probes.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ .ctx.Values.probes.periodSeconds }}
  timeoutSeconds: {{ .ctx.Values.probes.timeoutSeconds }}
  failureThreshold: {{ .ctx.Values.probes.failureThreshold }}
{{- end -}}
