"""Bundle-wide rules: no credential literals, no LoadBalancer by default, no placeholders, and the
fixes that the earlier bundle needed by hand (shared UPSTREAM-CHARTS.md) are in the values."""
from __future__ import annotations

import re

import pytest
import yaml

from chartlib import APP_CHARTS, BUNDLE, CHARTS, REPO, load_yaml

SECRET_KEY_RE = re.compile(r"(password|passwd|secret_?key|secretaccesskey|secret_access_key|"
                           r"rootpassword|rootuser|token|apikey|api_key)$", re.I)
# Keys that name a Secret or a key in it, not a credential.
REFERENCE_KEYS = {"existingsecret", "existingsecretkey", "passwordkey", "userkey", "secretname",
                  "fromsecret", "tokensecret"}
VALUE_FILES = sorted([*CHARTS.glob("*/values.yaml"), BUNDLE / "values.yaml"])


def credential_literals(node, path="") -> list[str]:
    """Paths whose key looks like a credential and whose value is a literal (not ${ENV}, not empty)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if (isinstance(value, (str, int)) and SECRET_KEY_RE.search(str(key))
                    and str(key).lower() not in REFERENCE_KEYS
                    and str(value) != "" and not re.fullmatch(r"\$\{[A-Za-z0-9_:]+\}", str(value))):
                found.append(f"{sub}={value!r}")
            found += credential_literals(value, sub)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += credential_literals(item, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("path", VALUE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_credential_literal_in_values(path):
    assert not credential_literals(load_yaml(path)), credential_literals(load_yaml(path))


def test_credential_check_catches_the_old_bundles_literals():
    # MinIO's own default users list and a Grafana admin password, as the earlier bundle had them.
    old = yaml.safe_load("minio: {rootPassword: minio123, users: [{accessKey: console, secretKey: console123}]}\n"
                         "grafana: {adminPassword: admin}")
    assert len(credential_literals(old)) == 3


def test_no_credential_literal_in_docs_or_rendered(rendered):
    text = (REPO / "docs/deploy.md").read_text()
    assert not re.search(r"(password|secretKey|rootPassword)\s*[:=]\s*['\"]?[A-Za-z0-9]{4,}", text, re.I)
    for chart, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "Secret":
                pytest.fail(f"{chart} renders Secret {doc['metadata']['name']}: credentials must be generated in the cluster")


def test_no_loadbalancer_service_by_default(rendered):
    for chart, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") != "LoadBalancer", f"{chart} {doc['metadata']['name']}"
    # Upstream Services we cannot render: their type is set to ClusterIP in our values.
    vals = {c: load_yaml(CHARTS / c / "values.yaml") for c in APP_CHARTS}
    assert vals["kalypso-istio"]["gateway"]["service"]["type"] == "ClusterIP"  # upstream default: LoadBalancer
    for path in VALUE_FILES:
        assert not re.search(r"type:\s*LoadBalancer", path.read_text()), path


def test_no_placeholders_to_hand_edit():
    pattern = re.compile(r"YOUR_ORG|YOUR-ORG|CHANGEME|CHANGE_ME|<your-org>|example\.com|TODO", re.I)
    files = [p for p in [*REPO.glob("charts/**/*"), *REPO.glob("argocd/**/*"), REPO / "docs/deploy.md",
                         REPO / "Dockerfile"] if p.is_file()]
    offenders = [str(p.relative_to(REPO)) for p in files if pattern.search(p.read_text(errors="ignore"))]
    assert not offenders, offenders


def test_istio_gateway_values_pass_its_strict_schema():
    gateway = load_yaml(CHARTS / "kalypso-istio/values.yaml")["gateway"]
    for forbidden in ("enabled", "defaults", "_internal_defaults_do_not_set"):
        assert forbidden not in gateway, forbidden
    assert gateway["name"], "without a name the gateway takes the release name"
    dep = [d for d in load_yaml(CHARTS / "kalypso-istio/Chart.yaml")["dependencies"] if d["name"] == "gateway"][0]
    assert not dep["condition"].startswith("gateway."), "the condition must live outside the gateway's values"


def test_cert_manager_is_never_a_subchart():
    for chart in APP_CHARTS:
        deps = load_yaml(CHARTS / chart / "Chart.yaml").get("dependencies", [])
        assert "cert-manager" not in {d["name"] for d in deps}, chart
    cm = load_yaml(BUNDLE / "values.yaml")["certManager"]
    assert cm["values"]["crds"]["enabled"] is True and "installCRDs" not in cm["values"]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _dep(chart, name):
    return [d for d in load_yaml(CHARTS / chart / "Chart.yaml")["dependencies"] if d["name"] == name][0]


def test_pyroscope_and_collector_speak_otlp_profiles_v1_10(rendered, workspace):
    assert _version(_dep("kalypso-pyroscope", "pyroscope")["version"]) >= (1, 20, 2)
    assert _version(_dep("kalypso-pyroscope", "opentelemetry-collector")["version"]) >= (0, 148, 0)
    col = load_yaml(CHARTS / "kalypso-pyroscope/values.yaml")["opentelemetry-collector"]
    assert "--feature-gates=+service.profilesSupport" in col["command"]["extraArgs"]
    assert col["image"]["repository"]
    assert col["presets"]["kubernetesAttributes"]["enabled"] is True  # k8s_attributes + its ClusterRole
    pyro = load_yaml(CHARTS / "kalypso-pyroscope/values.yaml")["pyroscope"]
    assert pyro["alloy"]["enabled"] is False and pyro["agent"]["enabled"] is False
    if "opentelemetry-collector" not in workspace.sources["kalypso-pyroscope"].real:
        pytest.skip("the collector's config is only known from the real chart")
    # What the collector really runs: the config the real chart renders from values + preset.
    (cm,) = [d for d in rendered["kalypso-pyroscope"] if d["kind"] == "ConfigMap"
             and d["metadata"]["name"] == col["fullnameOverride"]]
    cfg = yaml.safe_load(cm["data"]["relay"])
    pipeline = cfg["service"]["pipelines"]
    assert set(pipeline) == {"profiles"}, "only the profiles pipeline (alternateConfig)"
    profiles = pipeline["profiles"]
    # k8s_attributes first; the rest of the pipeline is checked in test_pyroscope_labels.py.
    assert profiles["receivers"] == ["otlp"] and profiles["processors"][0] == "k8s_attributes"
    (exporter,) = profiles["exporters"]
    assert exporter.split("/")[0] == "otlp_grpc"
    assert cfg["exporters"][exporter]["endpoint"] == "pyroscope.pyroscope.svc.cluster.local:4040"
    assert any({"from": "resource_attribute", "name": "container.id"} in rule["sources"]
               for rule in cfg["processors"]["k8s_attributes"]["pod_association"])
    assert "health_check" in cfg["service"]["extensions"], "the chart's probes need it"
    (deploy,) = [d for d in rendered["kalypso-pyroscope"] if d["kind"] == "Deployment"
                 and d["metadata"]["name"] == col["fullnameOverride"]]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert "--feature-gates=+service.profilesSupport" in container["args"]


def test_small_cluster_settings():
    mimir = load_yaml(CHARTS / "kalypso-mimir/values.yaml")["mimir-distributed"]
    assert mimir["kafka"]["enabled"] is False
    assert mimir["mimir"]["structuredConfig"]["ingest_storage"]["enabled"] is False
    assert mimir["mimir"]["structuredConfig"]["ingester"]["push_grpc_method_enabled"] is True
    assert mimir["rollout_operator"]["enabled"] is False and mimir["minio"]["enabled"] is False
    for comp in ("ingester", "store_gateway"):
        assert mimir[comp]["zoneAwareReplication"]["enabled"] is False
        assert mimir[comp]["replicas"] == 1
    loki = load_yaml(CHARTS / "kalypso-loki/values.yaml")["loki"]
    assert loki["deploymentMode"] == "Monolithic" and loki["singleBinary"]["replicas"] == 1
    assert all(loki[c]["replicas"] == 0 for c in ("read", "write", "backend"))
    assert loki["loki"]["commonConfig"]["replication_factor"] == 1
    assert loki["chunksCache"]["enabled"] is False and loki["resultsCache"]["enabled"] is False
    assert loki["lokiCanary"]["enabled"] == loki["test"]["enabled"]
    assert loki["loki"].get("useTestSchema") or loki["loki"].get("schemaConfig")
    tempo = load_yaml(CHARTS / "kalypso-tempo/values.yaml")["tempo-distributed"]
    assert _version(_dep("kalypso-tempo", "tempo-distributed")["version"]) < (3,), "3.x needs an external Kafka"
    assert tempo["ingester"]["replicas"] == 1 and tempo["ingester"]["config"]["replication_factor"] == 1
    minio = load_yaml(CHARTS / "kalypso-minio/values.yaml")["minio"]
    assert minio["mode"] == "standalone"  # one pod, one drive
    assert minio["resources"]["requests"]["memory"] != "16Gi"


def test_every_chart_has_schema_notes_and_standard_labels(rendered, bundle_render):
    for chart in APP_CHARTS:
        assert (CHARTS / chart / "values.schema.json").exists(), chart
        assert (CHARTS / chart / "templates/NOTES.txt").exists(), chart
        # Our own templates; the upstream subcharts label their objects their own way.
        for doc in bundle_render.ours(rendered[chart]):
            labels = doc["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/part-of") == "kalypso", f"{chart} {doc['kind']}"
            assert "app.kubernetes.io/managed-by" in labels


def test_deploy_doc_answers_each_of_the_14_manual_steps():
    text = (REPO / "docs/deploy.md").read_text()
    section = text.split("## The earlier bundle's manual steps", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^(\d+)\. \*\*(.+?)\*\*", section, flags=re.M)
    assert [int(n) for n, _ in items] == list(range(1, 15)), items
    for needle in ("Install with Argo CD", "Install with helm"):
        assert f"## {needle}" in text


def test_no_container_gets_the_same_argument_twice(rendered):
    """A flag the chart already passes and a value adds again (Loki's -config.expand-env) reads
    as configuration and is not."""
    twice = []
    for app, docs in rendered.items():
        for doc in docs:
            pod = (doc.get("spec") or {}).get("template", {}).get("spec") or {}
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                args = [a for a in c.get("args", []) if isinstance(a, str) and a.startswith("-")]
                twice += [f"{app} {doc['metadata']['name']}/{c['name']}: {a}" for a in set(args) if args.count(a) > 1]
    assert not twice, twice


def _workloads(docs):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")}


def test_small_cluster_settings_hold_in_the_real_render(rendered, workspace):
    """What the values above promise, as the real charts render it (Loki's caches were the Pending
    pods; one replica of everything; nothing the bundle turns off comes back)."""
    checked = 0
    if workspace.sources["kalypso-loki"].real:
        loki = _workloads(rendered["kalypso-loki"])
        assert set(loki) == {"loki", "loki-gateway"}, sorted(loki)  # no caches, canary, read/write/backend
        assert loki["loki"]["kind"] == "StatefulSet" and loki["loki"]["spec"]["replicas"] == 1
        checked += 1
    if workspace.sources["kalypso-tempo"].real:
        tempo = _workloads(rendered["kalypso-tempo"])
        assert all(w["spec"].get("replicas", 1) == 1 for w in tempo.values()), {n: w["spec"].get("replicas") for n, w in tempo.items()}
        assert not any("minio" in n or "gateway" in n for n in tempo), sorted(tempo)
        checked += 1
    if workspace.sources["kalypso-minio"].real:
        (minio,) = _workloads(rendered["kalypso-minio"]).values()
        assert minio["kind"] == "Deployment" and minio["spec"]["replicas"] == 1  # standalone
        checked += 1
    if workspace.sources["kalypso-pyroscope"].real:
        pyro = _workloads(rendered["kalypso-pyroscope"])
        assert set(pyro) == {"pyroscope", "kalypso-otel-collector"}, sorted(pyro)  # no alloy, agent, minio
        checked += 1
    if not checked:
        pytest.skip("needs the real subcharts")


def test_cert_manager_owns_its_crds_and_answers_before_it_is_healthy(rendered):
    if "cert-manager" not in rendered:
        pytest.skip("needs the real cert-manager chart")
    docs = rendered["cert-manager"]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert {"certificates.cert-manager.io", "issuers.cert-manager.io"} <= {c["metadata"]["name"] for c in crds}
    # crds.keep: Argo CD maps the keep policy to Delete=false, so removing the app keeps them.
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    (check,) = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"].endswith("startupapicheck")]
    # A post-install hook is a PostSync hook for Argo CD: the app is Healthy once the webhook answered.
    assert "post-install" in check["metadata"]["annotations"]["helm.sh/hook"]


def test_operator_webhook_certificate_comes_from_cert_manager(rendered, workspace):
    if not workspace.sources["kalypso-otel"].real:
        pytest.skip("needs the real opentelemetry-operator chart")
    docs = rendered["kalypso-otel"]
    (issuer,) = [d for d in docs if d["kind"] == "Issuer"]
    (cert,) = [d for d in docs if d["kind"] == "Certificate"]
    assert cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    webhook_svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-webhook")]
    assert webhook_svc and any(webhook_svc[0]["metadata"]["name"] in n for n in cert["spec"]["dnsNames"])
    ref = f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
    injected = [d for d in docs if (d["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from") == ref]
    kinds = {d["kind"] for d in injected}
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} <= kinds, kinds
    # No self-generated certificate (autoGenerateCert mints a new CA on every Argo CD render).
    assert not [d for d in docs if d["kind"] == "Secret"]
