#!/usr/bin/env python3
"""Sizes of the same profile as OTLP requests and as a gzip'd pprof, for `cargo xtask bench` (P7).

OTLP: each request recorded by otlp_receiver.py (one JSON line, MessageToDict with proto field
names) is parsed back into the official ExportProfilesServiceRequest and serialized again; the
bytes are those of the protobuf the agent sent (checked against the receiver's `_wire_bytes`), and
gzip'd at the default level, as gRPC's gzip compression sends it. Samples are counted per profile:
each Sample is one distinct stack of one process.

pprof: the file's gzip'd size, its uncompressed size, and its number of Sample messages (field 2
of Profile), counted by walking the top-level protobuf fields; no pprof schema needed.

Usage: python tests/readers/profile_bytes.py --otlp FILE.jsonl --pprof FILE.pb.gz
Prints one JSON object.
"""
import argparse
import gzip
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2


def otlp_sizes(path):
    requests = raw = zipped = samples = mismatched = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            wire = record.pop("_wire_bytes", None)
            record.pop("_received_unix_nano", None)
            request = profiles_service_pb2.ExportProfilesServiceRequest()
            json_format.ParseDict(record, request)
            data = request.SerializeToString()
            if wire is not None and wire != len(data):
                mismatched += 1
            requests += 1
            raw += len(data)
            zipped += len(gzip.compress(data))
            for rp in request.resource_profiles:
                for sp in rp.scope_profiles:
                    for p in sp.profiles:
                        samples += len(p.samples)
    return {
        "requests": requests,
        "raw_bytes": raw,
        "gzip_bytes": zipped,
        "samples": samples,
        "size_mismatches": mismatched,
    }


def _varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def pprof_sizes(path):
    with open(path, "rb") as f:
        zipped = f.read()
    raw = gzip.decompress(zipped)
    samples = 0
    i = 0
    while i < len(raw):
        key, i = _varint(raw, i)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, i = _varint(raw, i)
        elif wire_type == 1:
            i += 8
        elif wire_type == 2:
            length, i = _varint(raw, i)
            i += length
            if field == 2:
                samples += 1
        elif wire_type == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type} at byte {i}")
    return {"raw_bytes": len(raw), "gzip_bytes": len(zipped), "samples": samples}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--pprof", required=True)
    args = ap.parse_args(argv)
    print(json.dumps({"otlp": otlp_sizes(args.otlp), "pprof": pprof_sizes(args.pprof)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
