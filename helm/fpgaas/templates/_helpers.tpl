{{/* Names and labels. */}}
{{- define "fpgaas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fpgaas.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fpgaas.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fpgaas.image" -}}
{{- $image := index .root.Values.image .which -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" .root.Values.image.registry $image.repository $image.tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{/* Pod and container security: uid/gid 10001 (the images' user), no privilege, RO root. */}}
{{- define "fpgaas.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "fpgaas.containerSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Secrets: the name of the Secret holding each value, whether the chart makes it or not. */}}
{{- define "fpgaas.adminTokenSecret" -}}
{{- .Values.management.adminToken.existingSecret | default (printf "%s-admin-token" (include "fpgaas.fullname" .)) -}}
{{- end -}}
{{- define "fpgaas.inferenceTokenSecret" -}}
{{- .Values.inferenceToken.existingSecret | default (printf "%s-inference-token" (include "fpgaas.fullname" .)) -}}
{{- end -}}
{{- define "fpgaas.signingSecret" -}}
{{- .Values.signing.existingSecret | default (printf "%s-signing" (include "fpgaas.fullname" .)) -}}
{{- end -}}
{{- define "fpgaas.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "fpgaas.fullname" .)) -}}
{{- end -}}
{{- define "fpgaas.postgresqlSecret" -}}
{{- .Values.postgresql.auth.existingSecret | default (printf "%s-postgresql" (include "fpgaas.fullname" .)) -}}
{{- end -}}

{{- define "fpgaas.inferenceToken" -}}
{{- if or .Values.inferenceToken.existingSecret .Values.inferenceToken.value -}}true{{- end -}}
{{- end -}}

{{/* Whether anything needs the build queue's database. */}}
{{- define "fpgaas.needsDatabase" -}}
{{- if or .Values.worker.enabled .Values.management.enabled -}}true{{- end -}}
{{- end -}}

{{/* Refuse configurations that would expose management without a token, or miss a key. */}}
{{- define "fpgaas.checks" -}}
{{- if and .Values.management.enabled (not (or .Values.management.adminToken.existingSecret .Values.management.adminToken.value)) -}}
{{- fail "management.enabled needs a token: set management.adminToken.existingSecret (or .value); the management API is never exposed without one" -}}
{{- end -}}
{{- if not (or .Values.signing.existingSecret (and .Values.signing.privateKey .Values.signing.publicKey)) -}}
{{- fail "artifacts are signed: set signing.existingSecret (keys signing.key, signing.pub) or both signing.privateKey and signing.publicKey" -}}
{{- end -}}
{{- if and (include "fpgaas.needsDatabase" .) (not (or .Values.database.url .Values.database.existingSecret .Values.postgresql.enabled)) -}}
{{- fail "workers and management need the build queue's PostgreSQL: set database.url or database.existingSecret, or postgresql.enabled" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (not (or .Values.postgresql.auth.existingSecret .Values.postgresql.auth.password)) -}}
{{- fail "postgresql.enabled needs postgresql.auth.existingSecret or postgresql.auth.password" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (or .Values.database.url .Values.database.existingSecret) -}}
{{- fail "choose one database: postgresql.enabled (bundled) or database.url/existingSecret (external)" -}}
{{- end -}}
{{- if and (ne .Values.server.device "emulated") (not .Values.server.fpga.resource) (eq (int .Values.server.pynqEmulatedCards) 0) -}}
{{- fail (printf "server.device=%s needs server.fpga.resource (the device plugin's amd.com/... or xilinx.com/fpga-... name)" .Values.server.device) -}}
{{- end -}}
{{- end -}}

{{/* The build queue's database, as environment variables (secrets by reference only). */}}
{{- define "fpgaas.databaseEnv" -}}
{{- if .Values.postgresql.enabled }}
- name: FPGAAS_DATABASE_URL
  value: {{ printf "postgresql://%s@%s-postgresql:5432/%s" .Values.postgresql.auth.username (include "fpgaas.fullname" .) .Values.postgresql.auth.database | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "fpgaas.postgresqlSecret" . }}, key: {{ .Values.postgresql.auth.secretKey }}}
{{- else if or .Values.database.url .Values.database.existingSecret }}
- name: FPGAAS_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ include "fpgaas.databaseSecret" . }}, key: {{ .Values.database.existingSecret | empty | ternary "url" .Values.database.existingSecretKey }}}
{{- end }}
{{- end -}}

{{- define "fpgaas.tmpVolume" -}}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 1Gi}
{{- end -}}
