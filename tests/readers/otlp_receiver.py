#!/usr/bin/env python3
"""An independent OTLP profiles receiver for Kalypso's end-to-end tests.

A gRPC `opentelemetry.proto.collector.profiles.v1development.ProfilesService` server built only on
the official generated code from PyPI (`opentelemetry-proto` 1.45.x = proto v1.10, `grpcio`), so the
agent's encoder is checked against an implementation we did not write.

Every accepted Export request is appended to --out as one JSON object per line (MessageToDict with
proto field names; 64-bit integers are strings, default-valued fields are omitted), plus
`_received_unix_nano` and `_wire_bytes` (the serialized, uncompressed request size).

Fault injection for the "never lose data silently" tests:
  --stall-seconds S      sleep before answering each call (a slow collector); SIGUSR1 ends the
                         stall for good: stalled calls are answered at once and later ones are
                         not delayed (the collector recovers without a restart); a call
                         stalled until SIGTERM is refused with UNAVAILABLE and not recorded
  --reject-first N       answer the first N calls with UNAVAILABLE (a flapping collector)
  --require-header K=V   answer calls lacking that metadata with UNAUTHENTICATED
  --max-message-bytes N  the server's receive limit (RESOURCE_EXHAUSTED above it)

Usage: target/test-tools/venv/bin/python tests/readers/otlp_receiver.py --port 0 --out FILE
The first stdout line is `listening on 127.0.0.1:<port>`.
"""
import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2,
    profiles_service_pb2_grpc,
)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def log(msg):
    print(f"otlp_receiver: {msg}", file=sys.stderr, flush=True)


def parse_header(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    # gRPC metadata keys are case-insensitive and arrive lower-cased.
    return key.strip().lower(), value.strip()


class Receiver(profiles_service_pb2_grpc.ProfilesServiceServicer):
    def __init__(self, out, stall_seconds, reject_first, required_headers, unstall, stopping):
        self.out = out
        self.stall_seconds = stall_seconds
        self.reject_first = reject_first
        self.required_headers = required_headers
        self.unstall = unstall
        self.stopping = stopping
        self.lock = threading.Lock()
        self.calls = 0

    def Export(self, request, context):
        received = time.time_ns()
        with self.lock:
            self.calls += 1
            call = self.calls
        # The first N calls fail whatever they carry, like a collector that is still starting.
        if call <= self.reject_first:
            log(f"call {call}: rejected with UNAVAILABLE (--reject-first {self.reject_first})")
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver: simulated outage")
        metadata = {}
        for key, value in context.invocation_metadata():
            metadata.setdefault(key.lower(), value)
        for key, value in self.required_headers:
            if metadata.get(key) != value:
                log(f"call {call}: rejected with UNAUTHENTICATED (header {key!r} missing or wrong)")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"receiver: header {key} required")
        if self.stall_seconds > 0:
            self.stall(context)
            # A call stalled until shutdown is refused, not recorded: the client may already have
            # seen its deadline pass (the server learns of it a little later, so is_active() below
            # can still be true), and a collector that is going away acknowledges nothing.
            if self.stopping.is_set():
                log(f"call {call}: stalled until shutdown; refused with UNAVAILABLE, not recorded")
                context.abort(grpc.StatusCode.UNAVAILABLE, "receiver: shutting down")
        # Record only what the client will see acknowledged: a call whose deadline passed during
        # the stall is retried by the agent, and recording both copies would double-count samples.
        if not context.is_active():
            log(f"call {call}: client gave up (deadline or cancel) before the answer; not recorded")
            return profiles_service_pb2.ExportProfilesServiceResponse()
        record = json_format.MessageToDict(request, preserving_proto_field_name=True)
        record["_received_unix_nano"] = received
        record["_wire_bytes"] = request.ByteSize()
        line = json.dumps(record, sort_keys=True)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()
        return profiles_service_pb2.ExportProfilesServiceResponse()

    def stall(self, context):
        """Waits --stall-seconds, or until SIGUSR1 or SIGTERM (an Event rather than time.sleep so
        neither waits for stalled calls), or until the client gives up: a worker thread is not held
        for a call nobody waits for, so a long stall does not use up the server's workers."""
        until = time.monotonic() + self.stall_seconds
        while context.is_active():
            left = until - time.monotonic()
            if left <= 0 or self.unstall.wait(min(left, 0.2)):
                return


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--out", required=True, help="JSON-lines file the requests are appended to")
    ap.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    ap.add_argument("--stall-seconds", type=float, default=0.0)
    ap.add_argument("--reject-first", type=int, default=0)
    ap.add_argument(
        "--require-header", type=parse_header, action="append", default=[], metavar="KEY=VALUE"
    )
    args = ap.parse_args(argv)

    stop = threading.Event()
    # Set by SIGUSR1 (the collector recovers) and by SIGTERM (stalled calls must not delay exit).
    unstall = threading.Event()
    out = open(args.out, "a", encoding="utf-8")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[
            ("grpc.max_receive_message_length", args.max_message_bytes),
            ("grpc.max_send_message_length", args.max_message_bytes),
            # Without this a fixed --port silently shares the port with a stale receiver.
            ("grpc.so_reuseport", 0),
        ],
    )
    profiles_service_pb2_grpc.add_ProfilesServiceServicer_to_server(
        Receiver(out, args.stall_seconds, args.reject_first, args.require_header, unstall, stop),
        server,
    )
    try:
        # Older grpcio returns 0 on failure, newer raises.
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    except RuntimeError:
        port = 0
    if port == 0:
        log(f"cannot bind 127.0.0.1:{args.port}")
        return 2
    server.start()

    # Installed before the `listening` line: a test may signal as soon as it has read it.
    def on_signal(signum, _frame):
        log(f"signal {signum}: shutting down")
        unstall.set()
        stop.set()

    def on_unstall(signum, _frame):
        log(f"signal {signum}: no more stalling")
        unstall.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_unstall)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    # Wake up periodically so the signal handler runs promptly on the main thread.
    while not stop.wait(0.2):
        pass
    server.stop(grace=1).wait()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
