"""Every cross-namespace URL names a Service (and port) that the bundle really creates.

The earlier bundle pointed its S3 endpoint at minio.minio.svc while the Service was kalypso-minio
(manual step 6). Here each URL in values, rendered output and docs is resolved against the Services
that the real render creates. Only where a subchart is a placeholder (mimir-distributed today) do
the names come from upstream-services.yaml, the fullname rules of the upstream charts, and that
table is itself checked against the real render of every chart that has one.
"""
from __future__ import annotations

import copy
import json

import pytest

import crossrefs
from chartlib import REPO

EXPECTED_LINKS = {
    # (chart whose values hold it, URL): what it must resolve to
    ("kalypso-mimir", "minio.minio.svc.cluster.local:9000"),
    ("kalypso-loki", "minio.minio.svc.cluster.local:9000"),
    ("kalypso-tempo", "minio.minio.svc.cluster.local:9000"),
    ("kalypso-pyroscope", "minio.minio.svc.cluster.local:9000"),
    ("kalypso-pyroscope", "pyroscope.pyroscope.svc.cluster.local:4040"),
    ("kalypso-profiler", "http://kalypso-otel-collector.pyroscope.svc.cluster.local:4317"),
    ("kalypso-grafana", "http://mimir-gateway.mimir.svc.cluster.local:80"),
    ("kalypso-grafana", "http://tempo-query-frontend.tempo.svc.cluster.local:3200"),
    ("kalypso-grafana", "http://loki-gateway.loki.svc.cluster.local:80"),
    ("kalypso-grafana", "http://pyroscope.pyroscope.svc.cluster.local:4040"),
}


@pytest.fixture(scope="session")
def known(chart_values, namespaces, rendered, workspace):
    services = crossrefs.rendered_services(rendered, namespaces)
    # Only charts rendered against a placeholder take names from the documented table.
    stand_ins = {name: values for name, values in chart_values.items()
                 if workspace.sources[name].placeholders}
    for key, ports in crossrefs.upstream_services(stand_ins, namespaces).items():
        services.setdefault(key, set()).update(ports)
    # The API server, which Argo CD's destination names (https://kubernetes.default.svc).
    services.setdefault(("default", "kubernetes"), set()).add(443)
    # The cluster's DNS, which the Loki gateway's nginx uses as its resolver (kind and kubeadm
    # clusters name the CoreDNS Service kube-dns).
    services.setdefault(("kube-system", "kube-dns"), set()).add(53)
    return services


def test_the_bundle_has_the_expected_cross_namespace_links(chart_values, bundle_values):
    found = {(r.source.split("/")[1], r.text) for r in crossrefs.refs_in_values(chart_values, bundle_values)}
    missing = EXPECTED_LINKS - found
    assert not missing, f"links not found in values: {sorted(missing)}"


def test_every_url_in_values_names_a_service_and_port(chart_values, bundle_values, known):
    refs = crossrefs.refs_in_values(chart_values, bundle_values)
    assert len(refs) >= len(EXPECTED_LINKS)
    assert not crossrefs.unresolved(refs, known), "\n".join(crossrefs.unresolved(refs, known))


def test_every_url_in_rendered_output_names_a_service_and_port(rendered, known):
    refs = crossrefs.refs_in_rendered(rendered)
    assert any("kalypso-otel-collector.pyroscope" in r.text for r in refs)
    assert not crossrefs.unresolved(refs, known), "\n".join(crossrefs.unresolved(refs, known))


def test_every_url_in_the_deploy_docs_names_a_service_and_port(known):
    refs = crossrefs.find_refs("docs/deploy.md", (REPO / "docs/deploy.md").read_text())
    assert refs, "docs/deploy.md should show the endpoints"
    assert not crossrefs.unresolved(refs, known), "\n".join(crossrefs.unresolved(refs, known))


def test_workaround_6_mistake_is_caught(chart_values, bundle_values, namespaces, rendered):
    """Without minio.fullnameOverride the Service is kalypso-minio: minio.minio.svc must fail."""
    broken = copy.deepcopy(chart_values)
    del broken["kalypso-minio"]["minio"]["fullnameOverride"]
    known = crossrefs.upstream_services(broken, namespaces)
    assert ("minio", "kalypso-minio") in known
    problems = crossrefs.unresolved(crossrefs.refs_in_values(broken, bundle_values), known)
    assert any("minio.minio.svc.cluster.local:9000" in p and "no Service minio" in p for p in problems), problems


def test_a_wrong_port_is_caught(known):
    refs = crossrefs.find_refs("test", "http://pyroscope.pyroscope.svc.cluster.local:4041")
    assert crossrefs.unresolved(refs, known)


def test_a_service_in_the_wrong_namespace_is_caught(known):
    refs = crossrefs.find_refs("test", "loki-gateway.mimir.svc.cluster.local:80")
    assert crossrefs.unresolved(refs, known)


def test_disabled_distributor_port_is_not_assumed(chart_values, namespaces):
    off = copy.deepcopy(chart_values)
    off["kalypso-tempo"]["tempo-distributed"]["traces"]["otlp"]["grpc"]["enabled"] = False
    ports = crossrefs.upstream_services(off, namespaces)[("tempo", "tempo-distributor")]
    assert 4317 not in ports


def test_consumers_s3_wiring_matches_minio(chart_values, namespaces, rendered):
    minio = chart_values["kalypso-minio"]
    minio_ns = namespaces["kalypso-minio"]
    users = {u["accessKey"]: u for u in minio["minio"]["users"]}
    policies = {p["name"]: p for p in minio["minio"]["policies"]}
    buckets = {b["name"] for b in minio["minio"]["buckets"]}
    bindings = {d["metadata"]["name"] for d in rendered["kalypso-minio"] if d["kind"] == "RoleBinding"}
    for consumer in minio["consumers"]:
        chart = f"kalypso-{consumer['name']}"
        assert namespaces[chart] == consumer["namespace"], chart
        s3 = chart_values[chart]["s3"]
        assert (s3["fromNamespace"], s3["fromSecret"]) == (minio_ns, f"s3-{consumer['name']}"), chart
        assert s3["serviceAccount"] == consumer["serviceAccount"], chart
        sa = [d for d in rendered[chart] if d["kind"] == "ServiceAccount"
              and d["metadata"]["name"] == consumer["serviceAccount"]]
        assert sa and sa[0]["metadata"]["namespace"] == consumer["namespace"], chart
        assert f"kalypso-s3-read-{consumer['name']}" in bindings
        user = users[consumer["name"]]
        assert user["existingSecret"] == f"s3-{consumer['name']}" and "secretKey" not in user
        granted = {r.split(":::")[1].split("/")[0] for st in policies[user["policy"]]["statements"]
                   for r in st["resources"]}
        assert granted == set(consumer["buckets"]), chart
        assert set(consumer["buckets"]) <= buckets, chart
    # Nothing outside `consumers`.
    assert set(users) == {c["name"] for c in minio["consumers"]}


def test_grafana_route_attaches_to_the_gateway_that_istio_renders(chart_values, namespaces, rendered, workspace):
    gw_ns, gw_name = chart_values["kalypso-grafana"]["route"]["gateway"].split("/")
    assert gw_ns == namespaces["kalypso-istio"]
    gateways = [d for d in rendered["kalypso-istio"] if d["kind"] == "Gateway"]
    assert [g["metadata"]["name"] for g in gateways] == [gw_name]
    selector = gateways[0]["spec"]["selector"]
    assert selector == {"istio": chart_values["kalypso-istio"]["gateway"]["name"].removeprefix("istio-")}
    if "gateway" not in workspace.sources["kalypso-istio"].real:
        pytest.skip("the gateway's pods are only known from the real chart")
    # The pods that the real gateway chart creates carry every label the Gateway selects on.
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in rendered["kalypso-istio"]
            if d["kind"] == "Deployment" and d["metadata"]["name"] == chart_values["kalypso-istio"]["gateway"]["name"]]
    assert pods, "no gateway Deployment rendered"
    assert selector.items() <= pods[0].items(), (selector, pods[0])
    # and no other pod of the bundle does (istiod must not be picked as a gateway)
    others = [d["metadata"]["name"] for docs in rendered.values() for d in docs
              if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
              and d["metadata"]["name"] != chart_values["kalypso-istio"]["gateway"]["name"]
              and selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
    assert not others, others


def _secrets_spec(docs) -> dict:
    for d in docs:
        if d["kind"] == "Job":
            for c in d["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    if e["name"] == "KALYPSO_SECRETS_SPEC":
                        return json.loads(e["value"])
    raise AssertionError("no credentials Job")


def _containers(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                yield d, c


def test_generated_credentials_reach_minio_and_every_consumer_in_the_real_render(
        chart_values, namespaces, rendered, workspace):
    minio_docs = rendered["kalypso-minio"]
    generated = {g["name"]: g["keys"] for g in _secrets_spec(minio_docs)["generate"]}
    consumers = chart_values["kalypso-minio"]["consumers"]
    assert {f"s3-{c['name']}" for c in consumers} | {"minio-root"} == set(generated)
    if "minio" not in workspace.sources["kalypso-minio"].real:
        pytest.skip("MinIO's own objects are only known from the real chart")
    # MinIO's root login comes from the generated Secret, key by key.
    (_, server), = [(d, c) for d, c in _containers(minio_docs) if d["metadata"]["name"] == "minio"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    for var, key in (("MINIO_ROOT_USER", "rootUser"), ("MINIO_ROOT_PASSWORD", "rootPassword")):
        assert refs[var]["name"] == "minio-root" and refs[var]["key"] in generated["minio-root"], var
    # MinIO's post-install Job makes each consumer's user from that consumer's generated key.
    (job,) = [d for d in minio_docs if d["kind"] == "Job" and d["metadata"]["name"] == "minio-post-job"]
    projected = {src["secret"]["name"]: [i["key"] for i in src["secret"].get("items", [])]
                 for v in job["spec"]["template"]["spec"]["volumes"] if "projected" in v
                 for src in v["projected"]["sources"] if "secret" in src}
    (script,) = [d["data"]["add-user"] for d in minio_docs if d["kind"] == "ConfigMap" and "add-user" in d.get("data", {})]
    for c in consumers:
        assert projected.get(f"s3-{c['name']}") == ["secretKey"], c["name"]
        assert f"echo {c['name']} > $MINIO_ACCESSKEY_SECRETKEY_TMP" in script, c["name"]
        assert f"/config/secrets/s3-{c['name']}/secretKey" in script, c["name"]
    # Each consumer copies its key into its namespace and its S3 clients read it from there.
    for c in consumers:
        chart = f"kalypso-{c['name']}"
        docs = rendered[chart]
        (copy,) = _secrets_spec(docs)["copy"]
        secret = chart_values[chart]["s3"]["secretName"]
        assert (copy["fromNamespace"], copy["fromName"], copy["name"]) == (namespaces["kalypso-minio"], f"s3-{c['name']}", secret)
        assert set(copy["keys"].values()) <= set(generated[f"s3-{c['name']}"]), chart
        if workspace.sources[chart].placeholders:
            continue  # its workloads are only known from the real chart
        config = "\n".join(v for d in docs if d["kind"] == "ConfigMap" for v in d.get("data", {}).values())
        assert "minio.minio.svc.cluster.local:9000" in config, chart
        for bucket in c["buckets"]:
            assert bucket in config, f"{chart}: bucket {bucket} is in no config"
        servers = [(d, k) for d, k in _containers(docs) if any("-config.file" in str(a) for a in k.get("args", []))]
        assert servers, chart
        for d, k in servers:
            env_from = [e.get("secretRef", {}).get("name") for e in k.get("envFrom", [])]
            assert secret in env_from, f"{chart} {d['metadata']['name']}/{k['name']} lacks envFrom {secret}"
            if "${AWS_ACCESS_KEY_ID}" in config:
                assert "-config.expand-env=true" in k["args"], f"{chart} {d['metadata']['name']}: ${{}} would stay literal"


def test_documented_upstream_services_match_the_real_render(chart_values, namespaces, rendered, workspace):
    """upstream-services.yaml stands in for placeholders: every entry of a chart rendered with its
    real subcharts must name a Service and ports that the real render has."""
    real = {name: values for name, values in chart_values.items()
            if workspace.sources[name].real and not workspace.sources[name].placeholders}
    if not real:
        pytest.skip("no chart has its real subcharts here")
    actual = crossrefs.rendered_services({n: rendered[n] for n in real}, namespaces)
    documented = crossrefs.upstream_services(real, namespaces)
    assert documented, "the table covers none of the charts rendered for real"
    wrong = {key: ports for key, ports in documented.items() if not ports <= actual.get(key, set())}
    assert not wrong, {k: (sorted(v), sorted(actual.get(k, ()))) for k, v in wrong.items()}
