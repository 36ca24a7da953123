"""Tests of the independent OTLP receiver and checker, driven by the official Python client stub.

Run: target/test-tools/venv/bin/python -m pytest tests/readers/test_otlp_receiver.py
"""
import copy
import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as svc,
    profiles_service_pb2_grpc as svc_grpc,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
from opentelemetry.proto.resource.v1 import resource_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import otlp_check  # noqa: E402

RECEIVER = os.path.join(HERE, "otlp_receiver.py")


def valid_request():
    """A small but complete v1.10 request: two samples of one process, stacks main -> work."""
    strings = ["", "samples", "count", "cpu", "nanoseconds", "main", "work", "/usr/bin/app"]
    s = {name: i for i, name in enumerate(strings)}
    d = pb.ProfilesDictionary(
        string_table=strings,
        mapping_table=[
            pb.Mapping(),
            pb.Mapping(memory_start=0x1000, memory_limit=0x9000, filename_strindex=s["/usr/bin/app"]),
        ],
        function_table=[pb.Function(), pb.Function(name_strindex=s["main"]),
                        pb.Function(name_strindex=s["work"])],
        location_table=[
            pb.Location(),
            pb.Location(mapping_index=1, address=0x1100, lines=[pb.Line(function_index=1)]),
            pb.Location(mapping_index=1, address=0x1200, lines=[pb.Line(function_index=2)]),
        ],
        # Leaf first, as in pprof.
        stack_table=[pb.Stack(), pb.Stack(location_indices=[2, 1]), pb.Stack(location_indices=[1])],
        link_table=[pb.Link()],
        attribute_table=[pb.KeyValueAndUnit()],
    )
    profile = pb.Profile(
        sample_type=pb.ValueType(type_strindex=s["samples"], unit_strindex=s["count"]),
        period_type=pb.ValueType(type_strindex=s["cpu"], unit_strindex=s["nanoseconds"]),
        period=10_101_010,
        time_unix_nano=1_700_000_000_000_000_000,
        duration_nano=10_000_000_000,
        samples=[pb.Sample(stack_index=1, values=[7]), pb.Sample(stack_index=2, values=[3])],
    )
    resource = resource_pb2.Resource(attributes=[
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="app")),
        common_pb2.KeyValue(key="process.pid", value=common_pb2.AnyValue(int_value=4242)),
    ])
    return svc.ExportProfilesServiceRequest(
        dictionary=d,
        resource_profiles=[pb.ResourceProfiles(
            resource=resource, scope_profiles=[pb.ScopeProfiles(profiles=[profile])]
        )],
    )


class Receiver:
    def __init__(self, tmp_path, *args):
        self.out = tmp_path / "requests.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, RECEIVER, "--port", "0", "--out", str(self.out), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), (line, self.proc.stderr.read())
        self.addr = line.split()[-1]
        self.channel = grpc.insecure_channel(self.addr, compression=grpc.Compression.Gzip)
        self.stub = svc_grpc.ProfilesServiceStub(self.channel)

    def export(self, request, **kwargs):
        return self.stub.Export(request, timeout=kwargs.pop("timeout", 10), **kwargs)

    def lines(self):
        if not self.out.exists():
            return []
        return [json.loads(x) for x in self.out.read_text().splitlines()]

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@pytest.fixture
def receiver(tmp_path):
    started = []

    def start(*args):
        r = Receiver(tmp_path, *args)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_records_gzip_request_as_json_line(receiver):
    r = receiver()
    req = valid_request()
    before = time.time_ns()
    resp = r.export(req)
    assert resp == svc.ExportProfilesServiceResponse()
    [line] = r.lines()
    assert before <= line["_received_unix_nano"] <= time.time_ns()
    assert line["_wire_bytes"] == req.ByteSize()
    prof = line["resource_profiles"][0]["scope_profiles"][0]["profiles"][0]
    assert prof["period"] == "10101010"  # int64 as a string
    assert prof["time_unix_nano"] == "1700000000000000000"
    assert [s.get("stack_index", 0) for s in prof["samples"]] == [1, 2]
    assert line["dictionary"]["string_table"][0] == ""
    assert line["dictionary"]["stack_table"][0] == {}
    attrs = {a["key"]: a["value"] for a in line["resource_profiles"][0]["resource"]["attributes"]}
    assert attrs["service.name"] == {"string_value": "app"}
    assert otlp_check.check_request(line) == []
    assert otlp_check.main([str(r.out)]) == 0
    assert r.stop() == 0  # SIGTERM exits cleanly


def test_require_header(receiver):
    r = receiver("--require-header", "X-Scope-OrgID=tenant-1")
    with pytest.raises(grpc.RpcError) as e:
        r.export(valid_request())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        r.export(valid_request(), metadata=[("x-scope-orgid", "tenant-2")])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    r.export(valid_request(), metadata=[("x-scope-orgid", "tenant-1")])
    assert len(r.lines()) == 1
    assert r.stop() == 0


def test_reject_first(receiver):
    r = receiver("--reject-first", "2")
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as e:
            r.export(valid_request())
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert r.lines() == []
    r.export(valid_request())
    r.export(valid_request())
    assert len(r.lines()) == 2
    assert r.stop() == 0


def test_message_limit(receiver):
    r = receiver("--max-message-bytes", "100")
    with pytest.raises(grpc.RpcError) as e:
        r.export(valid_request())
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert r.lines() == []
    assert r.stop() == 0


def test_stall_not_recorded_after_client_deadline_and_sigterm_is_prompt(receiver):
    r = receiver("--stall-seconds", "30")
    with pytest.raises(grpc.RpcError) as e:
        r.export(valid_request(), timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    t0 = time.monotonic()
    assert r.stop() == 0
    assert time.monotonic() - t0 < 5  # the stalled handler does not hold up shutdown
    assert r.lines() == []


def test_sigusr1_ends_the_stall_for_stalled_and_later_calls(receiver):
    import threading

    r = receiver("--stall-seconds", "60")
    result = {}

    def call():
        try:
            result["response"] = r.export(valid_request(), timeout=30)
        except grpc.RpcError as e:  # pragma: no cover - reported by the assertion below
            result["error"] = e.code()

    stalled = threading.Thread(target=call)
    stalled.start()
    stalled.join(1.0)
    assert stalled.is_alive(), "the call was answered during the stall"
    assert r.lines() == []
    r.proc.send_signal(signal.SIGUSR1)
    stalled.join(10)
    assert not stalled.is_alive(), "SIGUSR1 did not release the stalled call"
    assert result == {"response": svc.ExportProfilesServiceResponse()}, result
    t0 = time.monotonic()
    r.export(valid_request(), timeout=10)
    assert time.monotonic() - t0 < 5  # later calls are not stalled
    assert len(r.lines()) == 2
    assert r.stop() == 0


def test_a_call_abandoned_by_its_client_frees_its_worker(receiver):
    # More abandoned stalled calls than the server has worker threads (8): each must free its
    # worker when the client gives up, or the last calls would queue behind the stall.
    r = receiver("--stall-seconds", "60")
    for _ in range(10):
        with pytest.raises(grpc.RpcError) as e:
            r.export(valid_request(), timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.0)
    r.proc.send_signal(signal.SIGUSR1)
    r.export(valid_request(), timeout=5)
    assert len(r.lines()) == 1
    assert r.stop() == 0
    log = r.proc.stderr.read()
    # Every abandoned call ended before the stall did, not because of it.
    before_unstall = log.split("no more stalling")[0]
    assert before_unstall.count("client gave up") == 10, log


def _recorded(req):
    """The request as the receiver would record it, without a server round trip."""
    from google.protobuf import json_format

    return json_format.MessageToDict(req, preserving_proto_field_name=True)


def test_check_flags_bad_indices_and_missing_zero_values(tmp_path):
    good = _recorded(valid_request())
    assert otlp_check.check_request(good) == []

    bad_req = valid_request()
    bad_req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 9
    bad_req.dictionary.location_table[1].lines[0].function_index = 3
    bad_req.dictionary.function_table[2].name_strindex = 99
    bad = _recorded(bad_req)
    v = otlp_check.check_request(bad)
    assert any("samples[0].stack_index = 9 out of range of stack_table (len 3)" in x for x in v), v
    assert any("function_index = 3 out of range of function_table" in x for x in v), v
    assert any("function_table[2].name_strindex = 99 out of range of string_table" in x for x in v), v
    assert len(v) == 3, v

    bad = copy.deepcopy(good)
    bad["dictionary"]["stack_table"][0] = {"location_indices": [1]}
    bad["dictionary"]["string_table"][0] = "x"
    del bad["dictionary"]["link_table"]
    prof = bad["resource_profiles"][0]["scope_profiles"][0]["profiles"][0]
    del prof["period"], prof["period_type"]
    prof["samples"][1]["values"] = ["3", "4"]
    v = otlp_check.check_request(bad)
    for want in ("stack_table[0]", "string_table[0]", "link_table is empty", ".period_type not set",
                 ".period = None, want > 0", "samples[1].values"):
        assert any(want in x for x in v), (want, v)

    assert otlp_check.check_request({}) != []

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    v = otlp_check.check_file(str(path))
    assert v and all(x.startswith("request 2: ") for x in v), v
    cli = subprocess.run([sys.executable, otlp_check.__file__, str(path)],
                         capture_output=True, text=True)
    assert cli.returncode == 1 and "request 2: " in cli.stdout
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert otlp_check.main([str(empty)]) == 1
    assert otlp_check.main([str(empty), "--allow-empty"]) == 0
