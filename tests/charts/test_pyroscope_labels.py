"""What a Pyroscope user sees: the profiles collector's final config (values + the real
opentelemetry-collector 0.170.0 chart's kubernetesAttributes preset) and the series labels that
Pyroscope 2.2.1 builds from it.

How Pyroscope turns an OTLP profile into series labels (grafana/pyroscope v2.2.1):
- pkg/ingester/otlp/ingest_handler.go:284-297: `__delta__`, `__otel__`, `__name__`, then every
  resource and scope attribute with a non-empty string/int value under its own key, then
  `service_name` (resource service.name, else "unknown_service:<process.executable.name>").
- pkg/model/pprofsplit/pprof_split.go:66-99: sample attributes (thread.name) that are not
  already series labels are added per group of samples, and ValidateLabels runs on that set.
- pkg/validation/validate.go:135-139: more than `max_label_names_per_series` (default 30,
  pkg/validation/limits.go:164) names rejects the profile. The count is taken before the
  sanitization merges `service.name` into `service_name`, so both count.
- pkg/validation/validate.go:247-271: with sanitization on (the chart sets it), `.` becomes `_`
  and any other character outside [A-Za-z0-9_] (or a leading digit) rejects the profile.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

import chartlib
from chartlib import CHARTS, load_yaml

CHART = "kalypso-pyroscope"
MAX_LABEL_NAMES_PER_SERIES = 30  # Pyroscope 2.2.1 default, -validation.max-label-names-per-series

# What the Kalypso agent puts on each profile's resource (issue 17), and on each sample.
AGENT_RESOURCE = ["service.name", "process.pid", "process.executable.name",
                  "process.executable.path", "container.id", "k8s.pod.uid", "host.name",
                  "host.arch"]
AGENT_SAMPLE = ["thread.name"]
# Must never reach Pyroscope: one value per process / duplicates of another label.
MUST_DROP = {"process.pid", "process.executable.path", "k8s.pod.uid"}
# Added by Pyroscope itself before validation (ingest_handler.go getDefaultLabels, :286, :294).
PYROSCOPE_OWN = ["__delta__", "__otel__", "__name__", "service_name"]

# The label names a pod's series carries, counted as ValidateLabels counts them. Worst case: all
# four workload kinds counted although a pod has one controller (17 for a real pod).
EXPECTED_LABELS = sorted([
    *PYROSCOPE_OWN,                                                   # 4
    "service.name", "process.executable.name", "container.id",        # agent, after deletion: 5
    "host.name", "host.arch",
    "k8s.namespace.name", "k8s.pod.name", "k8s.node.name",            # k8s_attributes: 8
    "k8s.container.name", "k8s.deployment.name", "k8s.statefulset.name",
    "k8s.daemonset.name", "k8s.job.name",
    "service.namespace", "service.version",                           # k8s_attributes: 2
    "thread.name",                                                    # sample: 1
])
EXPECTED_LABEL_COUNT = 20

# Processors of the otel/opentelemetry-collector-k8s image (opentelemetry-collector-releases
# v0.158.0 distributions/otelcol-k8s/manifest.yaml, `processors:`), by config type.
K8S_DISTRIBUTION_PROCESSORS = {
    "batch", "memory_limiter", "attributes", "cumulativetodelta", "deltatocumulative",
    "deltatorate", "drain", "filter", "groupbyattrs", "groupbytrace", "interval",
    "k8s_attributes", "k8sattributes", "logdedup", "metricsgeneration", "metricstransform",
    "probabilistic_sampler", "redaction", "remotetap", "resourcedetection", "resource",
    "tail_sampling", "transform",
}
# Of those, the ones whose factory registers the profiles signal (metadata.yaml `stability`:
# k8sattributes and transform "development: [profiles]"; resource registers none at v0.158).
PROFILES_PROCESSORS = {"k8s_attributes", "k8sattributes", "transform"}

# The collector simulation the Pyroscope rules checker applies to real agent requests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "readers"))
import pyroscope_rules  # noqa: E402
from pyroscope_rules import sanitize_legacy_label_name  # noqa: E402


def _collector_values() -> dict:
    return load_yaml(CHARTS / CHART / "values.yaml")["opentelemetry-collector"]


@pytest.fixture(scope="module")
def collector_config(rendered, workspace) -> dict:
    if "opentelemetry-collector" not in workspace.sources[CHART].real:
        pytest.skip("the collector's final config is only known from the real chart")
    name = _collector_values()["fullnameOverride"]
    (cm,) = [d for d in rendered[CHART] if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    return yaml.safe_load(cm["data"]["relay"])


def _processor_type(name: str) -> str:
    return name.split("/")[0]


def simulate_series_labels(cfg: dict, declared_service_name: bool) -> list[str]:
    """The label names Pyroscope validates for one pod's series, from the final config, with a
    pod that has every attribute the collector extracts (the worst case)."""
    attrs = {a: "x" for a in AGENT_RESOURCE if declared_service_name or a != "service.name"}
    collector = pyroscope_rules.Collector.from_config(cfg)
    attrs, _ = collector.apply(attrs, {tag: "x" for tag in collector.extracted()})
    labels = [*PYROSCOPE_OWN, *(a for a in attrs if a not in PYROSCOPE_OWN)]
    labels += [a for a in AGENT_SAMPLE if a not in labels]
    return sorted(labels)


def _statements(cfg: dict) -> list[str]:
    (group,) = cfg["processors"]["transform/pyroscope-labels"]["profile_statements"]
    assert group["context"] == "resource"
    return [" ".join(stmt.split()) for stmt in group["statements"]]


def test_profiles_pipeline_order(collector_config):
    profiles = collector_config["service"]["pipelines"]["profiles"]
    assert profiles["receivers"] == ["otlp"]
    # metadata, then the service.name fallback (reads k8s.*) and the deletions, then export.
    assert profiles["processors"] == ["k8s_attributes", "transform/pyroscope-labels"]
    assert profiles["exporters"] == ["otlp_grpc/pyroscope"]
    for proc in profiles["processors"]:
        assert proc in collector_config["processors"], proc
        assert _processor_type(proc) in K8S_DISTRIBUTION_PROCESSORS, f"{proc}: not in otelcol-k8s"
        assert _processor_type(proc) in PROFILES_PROCESSORS, f"{proc}: no profiles support"


def test_pod_association_by_pod_uid_then_container_id(collector_config):
    k8s = collector_config["processors"]["k8s_attributes"]
    # The preset's own list (k8s.pod.ip, k8s.pod.uid, connection) is replaced, and it added no
    # container.id rule in front of ours.
    assert k8s["pod_association"] == [
        {"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]},
        {"sources": [{"from": "resource_attribute", "name": "container.id"}]},
    ]
    metadata = k8s["extract"]["metadata"]
    assert "k8s.pod.uid" in metadata and "k8s.container.name" in metadata  # needed for both rules


def test_service_name_only_where_none_was_declared(collector_config):
    k8s = collector_config["processors"]["k8s_attributes"]["extract"]
    # In metadata the processor would always set service.name (down to the pod name), and the
    # namespace/container fallback could never apply.
    assert "service.name" not in k8s["metadata"]
    assert k8s["otel_annotations"] is False
    assert {"tag_name": "service.name", "key": "app.kubernetes.io/name", "from": "pod"} in k8s["labels"]
    assert {"tag_name": "service.name", "key": "resource.opentelemetry.io/service.name",
            "from": "pod"} in k8s["annotations"]
    stmt = _statements(collector_config)[0]
    assert stmt.startswith('set(attributes["service.name"], Concat([attributes["k8s.namespace.name"], '
                           'attributes["k8s.container.name"]], "/"))')
    assert 'where attributes["service.name"] == nil' in stmt, "a declared service.name must win"


def test_high_cardinality_attributes_are_deleted(collector_config):
    deleted = {m.group(1) for stmt in _statements(collector_config)
               if (m := re.match(r'delete_key\(attributes, "([^"]+)"\)$', stmt))}
    assert deleted == MUST_DROP
    # After the fallback, which reads no deleted key (and k8s_attributes, which used the uid).
    assert _statements(collector_config)[0].startswith("set(")


def test_feature_gate_and_self_metrics(rendered, collector_config):
    name = _collector_values()["fullnameOverride"]
    (deploy,) = [d for d in rendered[CHART] if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert "--feature-gates=+service.profilesSupport" in container["args"]
    (reader,) = collector_config["service"]["telemetry"]["metrics"]["readers"]
    prom = reader["pull"]["exporter"]["prometheus"]
    assert prom["host"] == "${env:MY_POD_IP}", "the default listens on localhost only"
    assert {"name": "metrics", "containerPort": prom["port"], "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "k8s-derived"])
def test_series_label_count_under_the_limit(collector_config, declared):
    labels = simulate_series_labels(collector_config, declared)
    assert labels == EXPECTED_LABELS
    assert len(labels) == EXPECTED_LABEL_COUNT < MAX_LABEL_NAMES_PER_SERIES
    assert not MUST_DROP & set(labels)


def test_every_label_name_survives_sanitization(collector_config):
    names = simulate_series_labels(collector_config, True)
    bad = [n for n in names if sanitize_legacy_label_name(n) is None]
    assert not bad, f"Pyroscope rejects profiles with these label names: {bad}"
    sanitized = [sanitize_legacy_label_name(n) for n in names]
    # After sanitization only service.name/service_name coincide (same value: merged).
    assert len(sanitized) - len(set(sanitized)) == 1 and "service_name" in sanitized
    assert sanitize_legacy_label_name("k8s.namespace.name") == "k8s_namespace_name"
    assert sanitize_legacy_label_name("app.kubernetes.io/name") is None


def test_pyroscope_sanitizes_label_names(rendered, workspace):
    if "pyroscope" not in workspace.sources[CHART].real:
        pytest.skip("Pyroscope's config is only known from the real chart")
    configs = [yaml.safe_load(d["data"]["config.yaml"]) for d in rendered[CHART]
               if d["kind"] == "ConfigMap" and "config.yaml" in (d.get("data") or {})]
    (config,) = [c for c in configs if isinstance(c, dict) and "storage" in c]
    # Pyroscope 2.x defaults to true (no sanitization: `k8s.namespace.name` kept with dots).
    assert config["limits"]["disable_label_sanitization"] is False


def _render(workspace, *sets):
    out = chartlib.helm_template(workspace.staged[CHART], "kalypso-pyroscope", "pyroscope",
                                 set_values=list(sets))
    assert out.returncode == 0, out.stderr
    return chartlib.load_all(out.stdout)


def test_collector_monitoring_is_off_by_default(rendered):
    kinds = {d["kind"] for d in rendered[CHART]}
    assert not kinds & {"PodMonitor", "PrometheusRule"}, "needs the prometheus-operator CRDs"


def test_collector_monitoring_when_enabled(workspace):
    if "opentelemetry-collector" not in workspace.sources[CHART].real:
        pytest.skip("the collector's pod labels are only known from the real chart")
    docs = _render(workspace, "collectorMonitoring.podMonitor.enabled=true",
                   "collectorMonitoring.prometheusRule.enabled=true")
    name = _collector_values()["fullnameOverride"]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    pod = deploy["spec"]["template"]
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items(), (selector, pod["metadata"]["labels"])
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    exprs = " ".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    assert "otelcol_exporter_send_failed_profile_samples" in exprs
    assert "otelcol_exporter_enqueue_failed_profile_samples" in exprs
