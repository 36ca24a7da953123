"""Tests of profile_bytes.py, the size counter `cargo xtask bench` (P7) relies on.

Run: target/test-tools/venv/bin/python -m pytest tests/readers/test_profile_bytes.py
"""
import gzip
import json
import os
import sys

from google.protobuf import json_format

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import profile_bytes  # noqa: E402
from test_otlp_receiver import valid_request  # noqa: E402


def _field(number, payload):
    """A length-delimited protobuf field (payloads here are shorter than 128 bytes)."""
    return bytes([(number << 3) | 2, len(payload)]) + payload


def test_otlp_sizes_match_the_wire_and_count_samples_per_profile(tmp_path):
    request = valid_request()
    data = request.SerializeToString()
    record = json_format.MessageToDict(request, preserving_proto_field_name=True)
    record["_wire_bytes"] = len(data)
    record["_received_unix_nano"] = 1
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    sizes = profile_bytes.otlp_sizes(path)
    samples = sum(
        len(p.samples) for rp in request.resource_profiles for sp in rp.scope_profiles for p in sp.profiles
    )
    assert sizes["requests"] == 2
    assert sizes["raw_bytes"] == 2 * len(data)
    assert sizes["gzip_bytes"] == 2 * len(gzip.compress(data))
    assert sizes["samples"] == 2 * samples
    assert sizes["size_mismatches"] == 0


def test_a_request_that_does_not_round_trip_is_counted(tmp_path):
    record = json_format.MessageToDict(valid_request(), preserving_proto_field_name=True)
    record["_wire_bytes"] = 1
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert profile_bytes.otlp_sizes(path)["size_mismatches"] == 1


def test_pprof_samples_are_the_top_level_field_2_entries(tmp_path):
    # Profile: sample_type (1), three samples (2), a string table entry (6), time_nanos (9, varint).
    raw = (
        _field(1, b"\x08\x01")
        + _field(2, b"\x08\x01\x10\x05")
        + _field(2, b"\x08\x02\x10\x03")
        + _field(2, b"\x08\x03")
        + _field(6, b"cpu")
        + bytes([9 << 3, 0x96, 0x01])
    )
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(gzip.compress(raw))
    sizes = profile_bytes.pprof_sizes(path)
    assert sizes == {"raw_bytes": len(raw), "gzip_bytes": path.stat().st_size, "samples": 3}

