{{/* Names, labels and the blocks every kubepbx workload shares. */}}

{{- define "kubepbx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name; component names are appended, so it is kept to 40 characters. */}}
{{- define "kubepbx.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubepbx.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: include "kubepbx.selectorLabels" (list . "registrar") */}}
{{- define "kubepbx.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "kubepbx.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component: include "kubepbx.labels" (list . "registrar") */}}
{{- define "kubepbx.labels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ include "kubepbx.chart" $ctx }}
{{ include "kubepbx.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: kubepbx
{{- end -}}

{{- define "kubepbx.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kubepbx.adminSecret" -}}
{{- default (printf "%s-admin" (include "kubepbx.fullname" .)) .Values.adminToken.existingSecret -}}
{{- end -}}

{{- define "kubepbx.sipService" -}}
{{- printf "%s-sip" (include "kubepbx.fullname" .) -}}
{{- end -}}

{{- define "kubepbx.etcdName" -}}
{{- printf "%s-etcd" (include "kubepbx.fullname" .) -}}
{{- end -}}

{{- define "kubepbx.recordingsClaim" -}}
{{- default (printf "%s-recordings" (include "kubepbx.fullname" .)) .Values.recordings.existingClaim -}}
{{- end -}}

{{/* etcd client URLs, comma-separated: the bundled members or etcd.external.endpoints. */}}
{{- define "kubepbx.etcdEndpoints" -}}
{{- if .Values.etcd.bundled.enabled -}}
{{- $name := include "kubepbx.etcdName" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.bundled.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-peer.%s.svc:2379" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- join "," .Values.etcd.external.endpoints -}}
{{- end -}}
{{- end -}}

{{/* Whether the etcd client needs the TLS Secret mounted. */}}
{{- define "kubepbx.etcdTls" -}}
{{- if and (not .Values.etcd.bundled.enabled) .Values.etcd.external.tls.secretName -}}true{{- end -}}
{{- end -}}

{{/* The environment every process that talks to etcd shares. */}}
{{- define "kubepbx.etcdEnv" -}}
- name: KUBEPBX_ETCD
  value: {{ include "kubepbx.etcdEndpoints" . | quote }}
- name: KUBEPBX_ETCD_PREFIX
  value: {{ .Values.etcd.prefix | quote }}
{{- if include "kubepbx.etcdTls" . }}
- name: KUBEPBX_ETCD_CA
  value: /etc/kubepbx/etcd-tls/ca.crt
- name: KUBEPBX_ETCD_CERT
  value: /etc/kubepbx/etcd-tls/tls.crt
- name: KUBEPBX_ETCD_KEY
  value: /etc/kubepbx/etcd-tls/tls.key
{{- end }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
{{- end -}}

{{- define "kubepbx.etcdTlsMount" -}}
{{- if include "kubepbx.etcdTls" . }}
- name: etcd-tls
  mountPath: /etc/kubepbx/etcd-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "kubepbx.etcdTlsVolume" -}}
{{- if include "kubepbx.etcdTls" . }}
- name: etcd-tls
  secret:
    secretName: {{ .Values.etcd.external.tls.secretName }}
{{- end }}
{{- end -}}

{{/* Checks that no value the schema cannot express is contradictory. */}}
{{- define "kubepbx.validate" -}}
{{- if and .Values.etcd.bundled.enabled .Values.etcd.external.endpoints -}}
{{- fail "etcd: set either etcd.bundled.enabled=true or etcd.external.endpoints, not both" -}}
{{- end -}}
{{- if and (not .Values.etcd.bundled.enabled) (not .Values.etcd.external.endpoints) -}}
{{- fail "etcd.external.endpoints is required when etcd.bundled.enabled is false (e.g. --set etcd.external.endpoints={https://etcd-0.example:2379})" -}}
{{- end -}}
{{- if not .Values.etcd.bundled.enabled -}}
{{- $schemes := dict -}}
{{- range .Values.etcd.external.endpoints -}}
{{- $_ := set $schemes (ternary "https" "http" (hasPrefix "https://" .)) true -}}
{{- end -}}
{{- if gt (len $schemes) 1 -}}
{{- fail "etcd.external.endpoints mixes http:// and https:// endpoints: use one scheme" -}}
{{- end -}}
{{- if and (hasKey $schemes "https") (not .Values.etcd.external.tls.secretName) -}}
{{- fail "etcd.external.tls.secretName is required for https:// endpoints (a Secret with ca.crt, and tls.crt and tls.key for a client certificate)" -}}
{{- end -}}
{{- if and (hasKey $schemes "http") .Values.etcd.external.tls.secretName -}}
{{- fail "etcd.external.tls.secretName is set but etcd.external.endpoints are http://: use https:// endpoints or drop the Secret" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.sip.tls.enabled (not .Values.sip.tls.secretName) -}}
{{- fail "sip.tls.secretName is required when sip.tls.enabled is true (a kubernetes.io/tls Secret with tls.crt and tls.key)" -}}
{{- end -}}
{{- if ge (int .Values.media.rtpPorts.first) (int .Values.media.rtpPorts.last) -}}
{{- fail (printf "media.rtpPorts.first (%v) must be below media.rtpPorts.last (%v)" .Values.media.rtpPorts.first .Values.media.rtpPorts.last) -}}
{{- end -}}
{{- if lt (sub (int .Values.media.rtpPorts.last) (int .Values.media.rtpPorts.first)) 3 -}}
{{- fail "media.rtpPorts must hold at least 4 ports (one call)" -}}
{{- end -}}
{{- $webrtc := int .Values.media.webrtcPort -}}
{{- if and (ge $webrtc (int .Values.media.rtpPorts.first)) (le $webrtc (int .Values.media.rtpPorts.last)) -}}
{{- fail (printf "media.webrtcPort (%d) lies inside media.rtpPorts: choose a port outside %v-%v" $webrtc .Values.media.rtpPorts.first .Values.media.rtpPorts.last) -}}
{{- end -}}
{{- if and (eq .Values.media.mode "loadBalancer") (gt (len .Values.media.addresses) (int .Values.media.replicas)) -}}
{{- fail (printf "media.addresses lists %d addresses for %d media.replicas: give at most one per replica" (len .Values.media.addresses) (int .Values.media.replicas)) -}}
{{- end -}}
{{- if and .Values.recordings.enabled .Values.recordings.existingClaim .Values.recordings.storageClass -}}
{{- fail "recordings.storageClass applies only to the claim the chart creates: drop it or recordings.existingClaim" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.etcd.bundled.enabled (eq .Values.media.mode "hostNetwork") (not .Values.networkPolicy.nodeCIDRs) -}}
{{- fail "networkPolicy.nodeCIDRs is required with media.mode=hostNetwork and the bundled etcd: hostNetwork media replicas reach etcd from their nodes' addresses (e.g. --set networkPolicy.nodeCIDRs={10.0.0.0/16})" -}}
{{- end -}}
{{- if and .Values.ingress.tls.enabled (not .Values.ingress.enabled) -}}
{{- fail "ingress.tls.enabled needs ingress.enabled" -}}
{{- end -}}
{{- end -}}

{{/* The recordings volume and mount, when recordings are on. */}}
{{- define "kubepbx.recordingsVolume" -}}
{{- if .Values.recordings.enabled }}
- name: recordings
  persistentVolumeClaim:
    claimName: {{ include "kubepbx.recordingsClaim" . }}
{{- end }}
{{- end -}}

{{- define "kubepbx.recordingsMount" -}}
{{- if .Values.recordings.enabled }}
- name: recordings
  mountPath: /var/lib/kubepbx/recordings
{{- end }}
{{- end -}}
