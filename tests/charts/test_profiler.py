"""The agent's DaemonSet: least privilege that still works, on every Linux node of both architectures."""
from __future__ import annotations

import re

import pytest

import chartlib
from chartlib import CHARTS, REPO

DOCUMENTED_CAPS = {"BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE", "SYSLOG"}


def _daemonset(docs):
    found = [d for d in docs if d["kind"] == "DaemonSet"]
    assert len(found) == 1
    return found[0]


def _agent(ds):
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return container


def _render(workspace, *sets):
    out = chartlib.helm_template(workspace.staged["kalypso-profiler"], "kalypso-profiler",
                                 "kalypso-profiler", set_values=list(sets))
    assert out.returncode == 0, out.stderr
    return chartlib.load_all(out.stdout)


@pytest.fixture(scope="module")
def ds(rendered):
    return _daemonset(rendered["kalypso-profiler"])


def test_no_privileged_anywhere_in_the_bundle(rendered):
    for chart, docs in rendered.items():
        for doc in docs:
            spec = doc.get("spec", {}).get("template", {}).get("spec") or doc.get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                assert not c.get("securityContext", {}).get("privileged"), f"{chart} {doc['metadata']['name']}"


def test_host_pid_and_nothing_else_from_the_host(ds):
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostIPC")
    host_paths = [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == ["/sys/kernel/btf"]
    mounts = {m["mountPath"]: m for m in _agent(ds)["volumeMounts"]}
    assert mounts["/sys/kernel/btf"]["readOnly"] is True


def test_read_only_root_and_no_escalation(ds):
    sc = _agent(ds)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False


def test_exactly_the_documented_capabilities(ds):
    caps = _agent(ds)["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert set(caps["add"]) == DOCUMENTED_CAPS and len(caps["add"]) == len(DOCUMENTED_CAPS)


def test_sys_admin_only_with_legacy_kernel(workspace):
    caps = _agent(_daemonset(_render(workspace, "capabilities.legacyKernel=true")))["securityContext"]["capabilities"]
    assert set(caps["add"]) == DOCUMENTED_CAPS | {"SYS_ADMIN"}
    caps = _agent(_daemonset(_render(workspace, "capabilities.kernelSymbols=false")))["securityContext"]["capabilities"]
    assert set(caps["add"]) == DOCUMENTED_CAPS - {"SYSLOG"}


def test_every_capability_is_documented_with_its_reason():
    values = (CHARTS / "kalypso-profiler/values.yaml").read_text()
    docs = (REPO / "docs/deploy.md").read_text()
    for cap in DOCUMENTED_CAPS | {"SYS_ADMIN"}:
        assert re.search(rf"^#\s+{cap}\s+\S", values, flags=re.M), f"values.yaml does not explain {cap}"
        assert f"CAP_{cap}" in docs, f"docs/deploy.md does not explain CAP_{cap}"


def test_runs_on_every_linux_node_of_any_architecture(ds):
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"operator": "Exists"} in pod["tolerations"], "must tolerate every taint"
    text = repr(pod.get("affinity", {})) + repr(pod["nodeSelector"])
    assert "kubernetes.io/arch" not in text and "amd64" not in text and "arm64" not in text


def test_probes_and_metrics_listen_on_the_pod_ip(ds):
    agent = _agent(ds)
    env = {e["name"]: e for e in agent["env"]}
    port = agent["ports"][0]
    assert env["PROFILER_METRICS_ADDR"]["value"] == f"0.0.0.0:{port['containerPort']}"
    for probe in ("livenessProbe", "readinessProbe"):
        assert agent[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}


def test_agent_configuration_from_values(ds):
    env = {e["name"]: e for e in _agent(ds)["env"]}
    assert env["PROFILER_EXPORTER"]["value"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].endswith(".pyroscope.svc.cluster.local:4317")
    assert env["PROFILER_FREQUENCY"]["value"] == "99"
    assert env["PROFILER_EXPORT_INTERVAL"]["value"] == "10s"
    assert env["PROFILER_HOST_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_unwind_cache_lives_on_its_own_bounded_volume_the_agent_stays_inside(ds, workspace):
    env = {e["name"]: e for e in _agent(ds)["env"]}
    assert env["PROFILER_UNWIND"]["value"] == "auto"
    assert env["PROFILER_UNWIND_TABLE_MIB"]["value"] == "24"
    mounts = {m["name"]: m["mountPath"] for m in _agent(ds)["volumeMounts"]}
    assert mounts["unwind-cache"] == env["PROFILER_UNWIND_CACHE_DIR"]["value"]
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    limit_mib = int(volumes["unwind-cache"]["emptyDir"]["sizeLimit"].removesuffix("Mi"))
    # The agent's own bound is below the volume's, so the kubelet never evicts the pod for it.
    assert 0 < int(env["PROFILER_UNWIND_CACHE_BYTES"]["value"]) < limit_mib << 20
    bigger = _daemonset(_render(workspace, "agent.unwindCacheMiB=1024", "agent.unwind=fp"))
    env = {e["name"]: e for e in _agent(bigger)["env"]}
    assert env["PROFILER_UNWIND"]["value"] == "fp"
    assert int(env["PROFILER_UNWIND_CACHE_BYTES"]["value"]) == 1024 * 943718


def test_requests_and_limits_are_set(ds):
    res = _agent(ds)["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]


def test_standard_labels_and_no_api_token(ds):
    labels = ds["metadata"]["labels"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"):
        assert key in labels
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_metrics_service_and_podmonitor_options(workspace, rendered):
    svc = [d for d in rendered["kalypso-profiler"] if d["kind"] == "Service"]
    assert svc and svc[0]["spec"]["type"] == "ClusterIP"
    pm = [d for d in _render(workspace, "podMonitor.enabled=true") if d["kind"] == "PodMonitor"]
    assert pm and pm[0]["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("bad", ["agent.exporter=kafka", "agent.frequency=0", "privileged=true",
                                 "agent.otlpEndpoint=collector:4317", "agent.unwind=frames",
                                 "agent.unwindTableMiB=0"])
def test_schema_rejects_bad_values(workspace, bad):
    out = chartlib.helm_template(workspace.staged["kalypso-profiler"], "p", "p", set_values=[bad])
    assert out.returncode != 0 and "schema" in out.stderr, bad


def test_notes_and_schema_exist():
    for name in ("templates/NOTES.txt", "values.schema.json"):
        assert (CHARTS / "kalypso-profiler" / name).exists()
