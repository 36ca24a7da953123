"""Tests of the Pyroscope rules checker: each rule catches what Pyroscope 2.2.1 rejects, and passes
what it accepts. Requests are built with the official generated code and decoded as the receiver
records them (MessageToDict, proto field names).

Run: target/test-tools/venv/bin/python -m pytest tests/readers/test_pyroscope_rules.py
"""
import copy
import json
import os
import sys

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pyroscope_rules as rules  # noqa: E402
from test_otlp_receiver import valid_request  # noqa: E402

VALUES = os.path.join(HERE, "..", "..", "charts", "kalypso-pyroscope", "values.yaml")
NOW = 1_700_000_005_000_000_000  # 5 s after valid_request()'s profile


def kv(key, value):
    if isinstance(value, int):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def decoded(req):
    return MessageToDict(req, preserving_proto_field_name=True)


def with_threads(req, names):
    """Every sample gets a thread.name attribute, one name per sample in turn."""
    d = req.dictionary
    for name in names:
        d.string_table.append(name)
    key = len(d.string_table)
    d.string_table.append("thread.name")
    first = len(d.attribute_table)
    for i, name in enumerate(names):
        d.attribute_table.append(pb.KeyValueAndUnit(
            key_strindex=key, value=common_pb2.AnyValue(string_value=name)))
    samples = req.resource_profiles[0].scope_profiles[0].profiles[0].samples
    for i, sample in enumerate(samples):
        sample.attribute_indices.append(first + i % len(names))
    return req


def test_a_valid_request_passes_and_its_labels_are_pyroscopes():
    req = decoded(valid_request())
    assert rules.check_request(req, NOW) == []
    ((s, problems),) = list(rules.series(req))
    assert problems == []
    names = {n: v for n, v, _ in s.labels}
    assert names == {"__delta__": "false", "__otel__": "true", "__name__": "process_cpu",
                     "service.name": "app", "process.pid": "4242", "service_name": "app"}


def test_one_series_per_thread_name():
    req = decoded(with_threads(valid_request(), ["spin-a", "spin-b"]))
    got = sorted((dict((n, v) for n, v, _ in s.labels)["thread.name"], s.samples)
                 for s, _ in rules.series(req))
    assert got == [("spin-a", 1), ("spin-b", 1)]
    assert rules.check_request(req, NOW) == []


def test_an_attribute_index_out_of_range_drops_the_profile():
    req = decoded(valid_request())
    req["resource_profiles"][0]["scope_profiles"][0]["profiles"][0]["samples"][0]["attribute_indices"] = [9]
    (v,) = rules.check_request(req, NOW)
    assert "attribute index 9 out of range" in v and "drops the whole profile" in v


def test_too_many_label_names():
    r = valid_request()
    for i in range(25):
        r.resource_profiles[0].resource.attributes.append(kv(f"extra.{i}", "x"))
    (v,) = rules.check_request(decoded(r), NOW)
    # 6 + 25 = 31: service.name and service_name both count.
    assert "31 label names, more than 30" in v
    r.resource_profiles[0].resource.attributes.pop()
    assert rules.check_request(decoded(r), NOW) == []


@pytest.mark.parametrize("name", ["app.kubernetes.io/name", "my-label", "9lives"])
def test_a_name_sanitization_cannot_fix_is_rejected(name):
    r = valid_request()
    r.resource_profiles[0].resource.attributes.append(kv(name, "x"))
    (v,) = rules.check_request(decoded(r), NOW)
    assert f"label name {name!r} is rejected" in v


def test_names_that_collide_after_sanitization_with_different_values():
    r = valid_request()
    r.resource_profiles[0].resource.attributes.append(kv("k8s.pod.name", "a"))
    r.resource_profiles[0].resource.attributes.append(kv("k8s_pod_name", "b"))
    (v,) = rules.check_request(decoded(r), NOW)
    assert "both k8s_pod_name after sanitization" in v


def test_only_strings_and_integers_become_labels():
    r = valid_request()
    r.resource_profiles[0].resource.attributes.append(
        common_pb2.KeyValue(key="flag", value=common_pb2.AnyValue(bool_value=True)))
    r.resource_profiles[0].resource.attributes.append(kv("empty", ""))
    ((s, _),) = list(rules.series(decoded(r)))
    assert not {"flag", "empty"} & {n for n, _, _ in s.labels}


def test_service_name_fallback():
    r = valid_request()
    del r.resource_profiles[0].resource.attributes[0]
    ((s, _),) = list(rules.series(decoded(r)))
    assert dict((n, v) for n, v, _ in s.labels)["service_name"] == "unknown_service"
    r.resource_profiles[0].resource.attributes.append(kv("process.executable.name", "java"))
    ((s, _),) = list(rules.series(decoded(r)))
    assert dict((n, v) for n, v, _ in s.labels)["service_name"] == "unknown_service:java"


def test_more_than_16000_samples():
    r = valid_request()
    prof = r.resource_profiles[0].scope_profiles[0].profiles[0]
    while len(prof.samples) < 16_001:
        prof.samples.append(pb.Sample(stack_index=1, values=[1]))
    (v,) = rules.check_request(decoded(r), NOW)
    assert "16001 samples, more than Pyroscope's 16000" in v
    del prof.samples[-1]
    assert rules.check_request(decoded(r), NOW) == []


@pytest.mark.parametrize("offset_s, ok", [(-3599, True), (-3601, False), (599, True), (601, False)])
def test_ingestion_window(offset_s, ok):
    req = decoded(valid_request())
    t = int(req["resource_profiles"][0]["scope_profiles"][0]["profiles"][0]["time_unix_nano"])
    got = rules.check_request(req, t - offset_s * 10**9)
    assert (got == []) == ok, got


def test_required_fields():
    req = decoded(valid_request())
    prof = req["resource_profiles"][0]["scope_profiles"][0]["profiles"][0]
    del prof["sample_type"]
    prof["samples"][0]["values"] = []
    prof["samples"][1]["stack_index"] = 99
    got = rules.check_request(req, NOW)
    assert any("sample type is missing" in v for v in got)
    assert any("sample value is required" in v for v in got)
    assert any("invalid stack index 99" in v for v in got)
    assert rules.check_request({}, NOW)[:2] == ["missing profile metadata dictionary",
                                                "missing resource profiles"]


# --- the chart's collector pipeline ----------------------------------------------------------

def pod_process():
    r = valid_request()
    attrs = r.resource_profiles[0].resource.attributes
    del attrs[0]  # the agent sets no service.name for a container's process
    attrs.extend([kv("process.executable.name", "app"), kv("process.executable.path", "/usr/bin/app"),
                  kv("container.id", "ab" * 32), kv("k8s.pod.uid", "5c5b1e3e-2a3c-4d56-8f3a-000000000001")])
    return r


def test_the_charts_pipeline_names_and_prunes_a_pods_profile():
    collector = rules.Collector.from_values(VALUES)
    req = decoded(with_threads(pod_process(), ["main"]))
    assert rules.check_request(req, NOW, collector, rules.simulated_pod) == []
    ((s, _),) = list(rules.series(req, collector, rules.simulated_pod))
    labels = {n: (v, src) for n, v, src in s.labels}
    # namespace/container, Grafana's eBPF convention, where the process declared no name.
    assert labels["service.name"] == ("shop/checkout", "collector")
    assert labels["service_name"] == ("shop/checkout", "pyroscope")
    assert labels["k8s.namespace.name"] == ("shop", "collector")
    assert labels["thread.name"] == ("main", "sample")
    assert not {"process.pid", "process.executable.path", "k8s.pod.uid"} & set(labels)
    assert len(labels) < rules.MAX_LABEL_NAMES_PER_SERIES


def test_a_declared_service_name_wins_over_the_pod():
    collector = rules.Collector.from_values(VALUES)
    r = pod_process()
    r.resource_profiles[0].resource.attributes.append(kv("service.name", "checkout-api"))
    ((s, _),) = list(rules.series(decoded(r), collector, rules.simulated_pod))
    assert dict((n, v) for n, v, _ in s.labels)["service_name"] == "checkout-api"


def test_a_host_process_gets_no_pod_metadata():
    collector = rules.Collector.from_values(VALUES)
    ((s, _),) = list(rules.series(decoded(valid_request()), collector, rules.simulated_pod))
    names = {n for n, _, _ in s.labels}
    assert names == {"__delta__", "__otel__", "__name__", "service.name", "service_name"}


def test_unknown_collector_steps_are_errors_not_no_ops():
    cfg = {"service": {"pipelines": {"profiles": {"processors": ["transform/x"]}}},
           "processors": {"transform/x": {"profile_statements": [
               {"context": "resource", "statements": ['set(attributes["a"], "b")']}]}}}
    with pytest.raises(ValueError, match="unsupported OTTL statement"):
        rules.Collector.from_config(cfg)
    cfg["processors"] = {"transform/x": None}
    cfg["service"]["pipelines"]["profiles"]["processors"] = ["batch"]
    cfg["processors"]["batch"] = {}
    with pytest.raises(ValueError, match="not understood"):
        rules.Collector.from_config(cfg)


def test_the_command_line(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(decoded(pod_process())) + "\n")
    assert rules.main([str(good), "--chart-values", VALUES, "--simulate-pod", "--now-ns", str(NOW)]) == 0
    bad = copy.deepcopy(decoded(pod_process()))
    bad["resource_profiles"][0]["resource"]["attributes"].append(
        {"key": "a-b", "value": {"string_value": "x"}})
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    assert rules.main([str(tmp_path / "bad.jsonl"), "--now-ns", str(NOW)]) == 1
    assert "label name 'a-b' is rejected" in capsys.readouterr().out
    assert rules.main([str(tmp_path / "missing.jsonl")]) == 2
    assert rules.main([str(good), "--chart-values", VALUES, "--simulate-pod", "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "| `k8s_namespace_name` | `shop` (collector) |" in table
    assert "| `service_name` | `shop/checkout` (collector) |" in table
