"""The credentials Job of kalypso-lib, run for real against a fake Kubernetes API on 127.0.0.1.

The script and its spec are taken from the rendered charts, so what is tested is what ships.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class FakeApi:
    """Secrets only: GET, POST (409 if present), merge PATCH. Records every call."""

    def __init__(self):
        self.secrets: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.denied: set[tuple[str, str]] = set()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body=None):
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                parts = self.path.strip("/").split("/")  # api v1 namespaces NS secrets [NAME]
                assert self.headers["Authorization"] == "Bearer test-token"
                return parts[3], (parts[5] if len(parts) > 5 else None)

            def _body(self):
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_GET(self):
                ns, name = self._route()
                api.calls.append(("GET", f"{ns}/{name}"))
                if (ns, name) in api.denied:
                    return self._reply(403)
                if (ns, name) not in api.secrets:
                    return self._reply(404)
                self._reply(200, api.secrets[(ns, name)])

            def do_POST(self):
                ns, _ = self._route()
                body = self._body()
                name = body["metadata"]["name"]
                api.calls.append(("POST", f"{ns}/{name}"))
                if (ns, name) in api.secrets:
                    return self._reply(409)
                api.secrets[(ns, name)] = body
                self._reply(201, body)

            def do_PATCH(self):
                ns, name = self._route()
                assert self.headers["Content-Type"] == "application/merge-patch+json"
                api.calls.append(("PATCH", f"{ns}/{name}"))
                patch = self._body()
                api.secrets[(ns, name)].setdefault("data", {}).update(patch.get("data", {}))
                self._reply(200, api.secrets[(ns, name)])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def value(self, ns, name, key):
        return base64.b64decode(self.secrets[(ns, name)]["data"][key]).decode()


@pytest.fixture
def api():
    fake = FakeApi()
    yield fake
    fake.close()


def _credentials_job(docs):
    """kalypso-lib's Job: the one that mounts the ConfigMap holding kalypso_secrets.py (the real
    subcharts render Jobs of their own, such as MinIO's post-job)."""
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "kalypso_secrets.py" in d.get("data", {})]
    (job,) = [d for d in docs if d["kind"] == "Job" and any(
        v.get("configMap", {}).get("name") == cm["metadata"]["name"]
        for v in d["spec"]["template"]["spec"].get("volumes", []))]
    return cm, job


def _job_parts(docs):
    cm, job = _credentials_job(docs)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return cm["data"]["kalypso_secrets.py"], env


def _run(tmp_path, api, script, env, namespace, wait="0"):
    (tmp_path / "token").write_text("test-token")
    (tmp_path / "job.py").write_text(script)
    full = {"KALYPSO_API_URL": api.url, "KALYPSO_SA_DIR": str(tmp_path), "KALYPSO_NAMESPACE": namespace,
            "KALYPSO_SECRETS_SPEC": env["KALYPSO_SECRETS_SPEC"],
            "KALYPSO_SECRET_LABELS": env["KALYPSO_SECRET_LABELS"], "KALYPSO_WAIT_SECONDS": wait,
            "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(tmp_path / "job.py")], env=full, capture_output=True,
                          text=True, timeout=60)


def test_minio_credentials_are_generated_once_and_never_rotated(tmp_path, api, rendered):
    script, env = _job_parts(rendered["kalypso-minio"])
    first = _run(tmp_path, api, script, env, "minio")
    assert first.returncode == 0, first.stderr
    root = api.value("minio", "minio-root", "rootPassword")
    assert len(root) == 40 and root.isalnum()
    assert api.value("minio", "s3-mimir", "accessKey") == "mimir"
    mimir_key = api.value("minio", "s3-mimir", "secretKey")
    second = _run(tmp_path, api, script, env, "minio")
    assert second.returncode == 0, second.stderr
    assert api.value("minio", "minio-root", "rootPassword") == root
    assert api.value("minio", "s3-mimir", "secretKey") == mimir_key
    assert not any(c[0] == "PATCH" for c in api.calls), "nothing to change on the second run"
    # No value is ever printed.
    for out in (first.stdout + first.stderr, second.stdout + second.stderr):
        assert root not in out and mimir_key not in out


def test_a_key_added_to_the_spec_is_filled_in_without_touching_the_others(tmp_path, api, rendered):
    script, env = _job_parts(rendered["kalypso-minio"])
    api.secrets[("minio", "minio-root")] = {"metadata": {"name": "minio-root"},
                                            "data": {"rootUser": base64.b64encode(b"keep").decode()}}
    assert _run(tmp_path, api, script, env, "minio").returncode == 0
    assert api.value("minio", "minio-root", "rootUser") == "keep"
    assert len(api.value("minio", "minio-root", "rootPassword")) == 40


def test_consumer_copies_its_key_from_minio_and_follows_changes(tmp_path, api, rendered):
    _run(tmp_path, api, *_job_parts(rendered["kalypso-minio"]), "minio")
    script, env = _job_parts(rendered["kalypso-loki"])
    result = _run(tmp_path, api, script, env, "loki")
    assert result.returncode == 0, result.stderr
    assert api.value("loki", "kalypso-s3", "AWS_ACCESS_KEY_ID") == "loki"
    assert api.value("loki", "kalypso-s3", "AWS_SECRET_ACCESS_KEY") == api.value("minio", "s3-loki", "secretKey")
    api.secrets[("minio", "s3-loki")]["data"]["secretKey"] = base64.b64encode(b"rotated").decode()
    assert _run(tmp_path, api, script, env, "loki").returncode == 0
    assert api.value("loki", "kalypso-s3", "AWS_SECRET_ACCESS_KEY") == "rotated"


def test_consumer_fails_with_a_clear_message_when_minio_never_grants_access(tmp_path, api, rendered):
    api.denied.add(("minio", "s3-tempo"))
    script, env = _job_parts(rendered["kalypso-tempo"])
    result = _run(tmp_path, api, script, env, "tempo", wait="0")
    assert result.returncode == 1
    assert "cannot read Secret minio/s3-tempo (HTTP 403)" in result.stderr


def test_grafana_admin_password_is_generated(tmp_path, api, rendered):
    script, env = _job_parts(rendered["kalypso-grafana"])
    assert _run(tmp_path, api, script, env, "grafana").returncode == 0
    assert api.value("grafana", "grafana-admin", "admin-user") == "admin"
    assert len(api.value("grafana", "grafana-admin", "admin-password")) == 32


def test_job_runs_before_the_release_and_can_touch_only_its_secrets(rendered):
    for chart in ("kalypso-minio", "kalypso-mimir", "kalypso-grafana"):
        docs = rendered[chart]
        _, job = _credentials_job(docs)
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        role = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == job["metadata"]["name"]][0]
        named = [r for r in role["rules"] if "resourceNames" in r]
        assert named and set(named[0]["verbs"]) == {"get", "patch"}
        spec = json.loads([e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
                           if e["name"] == "KALYPSO_SECRETS_SPEC"][0])
        targets = {i["name"] for i in spec["generate"] + spec["copy"]}
        assert set(named[0]["resourceNames"]) == targets
