{{/*
kalypso-lib.secretsJob renders a pre-install/pre-upgrade hook Job (Argo CD runs it as PreSync) that
creates or copies Secrets in the release namespace.

Why a Job and not a templated Secret:
- A Secret made with randAlphaNum changes on every `helm template`. Argo CD renders that way and
  `lookup` returns nothing there, so the credentials would rotate on every sync.
- A Secret cannot be read from another namespace. The S3 keys that MinIO knows must be copied into
  each consumer's namespace by something that holds the right RBAC.

Call it with a dict:
  ctx       the chart's root context ($)
  name      name of the ServiceAccount, Role, RoleBinding, ConfigMap and Job
  generate  list of {name, keys: {KEY: {random: N} | {value: S}}}: created when absent; a value that
            exists is never changed, and a key that is missing is added
  copy      list of {fromNamespace, fromName, name, keys: {DEST_KEY: SOURCE_KEY}}: copied, and kept in sync
Settings come from ctx.Values.secretsJob (image, resources, waitSeconds).
*/}}
{{- define "kalypso-lib.secretsJob" -}}
{{- $ctx := .ctx -}}
{{- $job := $ctx.Values.secretsJob -}}
{{- $targets := list -}}
{{- range (.generate | default list) }}{{ $targets = append $targets .name }}{{ end -}}
{{- range (.copy | default list) }}{{ $targets = append $targets .name }}{{ end -}}
{{- $spec := dict "generate" (.generate | default list) "copy" (.copy | default list) -}}
{{- $hook := dict "helm.sh/hook" "pre-install,pre-upgrade" "helm.sh/hook-weight" "-10" "helm.sh/hook-delete-policy" "before-hook-creation" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kalypso-lib.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: credentials
  annotations:
    {{- toYaml $hook | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kalypso-lib.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: credentials
  annotations:
    {{- toYaml $hook | nindent 4 }}
rules:
  # "create" cannot be limited by resourceNames (the name is not known before the object exists).
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["create"]
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: {{ toJson $targets }}
    verbs: ["get", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kalypso-lib.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: credentials
  annotations:
    {{- toYaml $hook | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .name }}
subjects:
  - kind: ServiceAccount
    name: {{ .name }}
    namespace: {{ $ctx.Release.Namespace }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kalypso-lib.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: credentials
  annotations:
    {{- toYaml $hook | nindent 4 }}
data:
  kalypso_secrets.py: |
    {{- include "kalypso-lib.secretsScript" . | nindent 4 }}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kalypso-lib.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: credentials
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    # After the ServiceAccount, Role, RoleBinding and ConfigMap (weight -10).
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    checkov.io/skip1: CKV_K8S_38=the Job's whole purpose is to call the API server (Secrets), so it needs its token
spec:
  backoffLimit: 4
  # Long enough to wait out a source Secret that another release is still creating.
  activeDeadlineSeconds: {{ add ($job.waitSeconds | int) 120 }}
  template:
    metadata:
      labels:
        {{- include "kalypso-lib.labels" $ctx | nindent 8 }}
        app.kubernetes.io/component: credentials
    spec:
      serviceAccountName: {{ .name }}
      # The Job talks to the API server, so it needs its token; nothing else in the pod does.
      automountServiceAccountToken: true
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        runAsGroup: 65534
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: secrets
          image: {{ printf "%s:%s" $job.image.repository $job.image.tag | quote }}
          imagePullPolicy: {{ $job.image.pullPolicy }}
          command: ["python3", "/opt/kalypso/kalypso_secrets.py"]
          env:
            - name: PYTHONDONTWRITEBYTECODE
              value: "1"
            - name: KALYPSO_WAIT_SECONDS
              value: {{ $job.waitSeconds | quote }}
            - name: KALYPSO_SECRETS_SPEC
              value: {{ toJson $spec | quote }}
            - name: KALYPSO_SECRET_LABELS
              value: {{ dict "app.kubernetes.io/part-of" "kalypso" "app.kubernetes.io/managed-by" "kalypso-secrets" | toJson | quote }}
          securityContext:
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          resources:
            {{- toYaml $job.resources | nindent 12 }}
          volumeMounts:
            - name: script
              mountPath: /opt/kalypso
              readOnly: true
      volumes:
        - name: script
          configMap:
            name: {{ .name }}
{{- end }}

{{/*
The script the Job runs. Standard library only, so any python3 image will do; it never prints a
secret value. Tested offline against a fake API server in tests/charts/test_secrets_job.py.
*/}}
{{- define "kalypso-lib.secretsScript" -}}
"""Create and copy the Kalypso bundle's Secrets from inside the cluster (see _secrets.tpl)."""
import base64
import json
import os
import secrets
import ssl
import string
import sys
import time
import urllib.error
import urllib.request

SA_DIR = os.environ.get("KALYPSO_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
# Letters and digits only: the values end up in env vars and `${VAR}`-expanded YAML configs.
ALPHABET = string.ascii_letters + string.digits


class Failure(Exception):
    """One line that says what failed and what to do."""


class Api:
    def __init__(self):
        url = os.environ.get("KALYPSO_API_URL")
        if not url:
            host = os.environ["KUBERNETES_SERVICE_HOST"]
            if ":" in host:
                host = "[" + host + "]"
            url = "https://" + host + ":" + os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.url = url.rstrip("/")
        with open(os.path.join(SA_DIR, "token"), encoding="utf-8") as f:
            self.token = f.read().strip()
        self.ctx = None
        if self.url.startswith("https://"):
            self.ctx = ssl.create_default_context(cafile=os.path.join(SA_DIR, "ca.crt"))

    def call(self, method, path, body=None, content_type="application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, None
        except urllib.error.URLError as err:
            return 0, str(err.reason)


def path(namespace, name=None):
    base = "/api/v1/namespaces/" + namespace + "/secrets"
    return base if name is None else base + "/" + name


def encode(value):
    return base64.b64encode(value.encode()).decode()


def make_value(spec):
    if "value" in spec:
        return spec["value"]
    return "".join(secrets.choice(ALPHABET) for _ in range(int(spec["random"])))


def expect(status, what):
    if status not in (200, 201):
        raise Failure(what + " failed with HTTP " + str(status) + ": check the Role of this Job")


def generate(api, namespace, item, labels):
    name = item["name"]
    for _ in range(3):
        status, live = api.call("GET", path(namespace, name))
        if status == 404:
            data = {k: encode(make_value(v)) for k, v in item["keys"].items()}
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                    "metadata": {"name": name, "namespace": namespace, "labels": labels}}
            status, _ = api.call("POST", path(namespace), body)
            if status == 409:
                continue  # created meanwhile by a concurrent run: read it again
            expect(status, "creating Secret " + namespace + "/" + name)
            print("created Secret " + namespace + "/" + name + " with keys " + ", ".join(sorted(data)))
            return
        expect(status, "reading Secret " + namespace + "/" + name)
        have = live.get("data") or {}
        missing = {k: encode(make_value(v)) for k, v in item["keys"].items() if k not in have}
        if missing:
            status, _ = api.call("PATCH", path(namespace, name), {"data": missing},
                                 "application/merge-patch+json")
            expect(status, "adding keys to Secret " + namespace + "/" + name)
            print("added keys " + ", ".join(sorted(missing)) + " to Secret " + namespace + "/" + name)
        else:
            print("kept Secret " + namespace + "/" + name + " as it is")
        return
    raise Failure("Secret " + namespace + "/" + name + " kept changing while it was created")


def copy(api, namespace, item, labels, wait_seconds):
    src = item["fromNamespace"] + "/" + item["fromName"]
    deadline = time.monotonic() + wait_seconds
    while True:
        status, source = api.call("GET", path(item["fromNamespace"], item["fromName"]))
        if status == 200:
            break
        # 404: the owning release has not created it yet; 403: its RoleBinding is not there yet.
        if status in (0, 403, 404) and time.monotonic() < deadline:
            print("waiting for Secret " + src + " (HTTP " + str(status) + ")")
            time.sleep(5)
            continue
        raise Failure("cannot read Secret " + src + " (HTTP " + str(status) + "): is the kalypso-minio "
                      "release installed, and does it grant this namespace's ServiceAccount access?")
    source_data = source.get("data") or {}
    data = {}
    for dest_key, source_key in item["keys"].items():
        if source_key not in source_data:
            raise Failure("Secret " + src + " has no key " + source_key)
        data[dest_key] = source_data[source_key]
    name = item["name"]
    status, live = api.call("GET", path(namespace, name))
    if status == 404:
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                "metadata": {"name": name, "namespace": namespace, "labels": labels}}
        status, _ = api.call("POST", path(namespace), body)
        expect(status, "creating Secret " + namespace + "/" + name)
        print("copied Secret " + src + " to " + namespace + "/" + name)
        return
    expect(status, "reading Secret " + namespace + "/" + name)
    if (live.get("data") or {}) == data:
        print("Secret " + namespace + "/" + name + " already matches " + src)
        return
    status, _ = api.call("PATCH", path(namespace, name), {"data": data}, "application/merge-patch+json")
    expect(status, "updating Secret " + namespace + "/" + name)
    print("updated Secret " + namespace + "/" + name + " from " + src)


def main():
    spec = json.loads(os.environ["KALYPSO_SECRETS_SPEC"])
    labels = json.loads(os.environ.get("KALYPSO_SECRET_LABELS", "{}"))
    wait_seconds = int(os.environ.get("KALYPSO_WAIT_SECONDS", "300"))
    namespace = os.environ.get("KALYPSO_NAMESPACE")
    if not namespace:
        with open(os.path.join(SA_DIR, "namespace"), encoding="utf-8") as f:
            namespace = f.read().strip()
    api = Api()
    try:
        for item in spec.get("generate", []):
            generate(api, namespace, item, labels)
        for item in spec.get("copy", []):
            copy(api, namespace, item, labels, wait_seconds)
    except Failure as err:
        print("kalypso-secrets: " + str(err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
{{- end }}
