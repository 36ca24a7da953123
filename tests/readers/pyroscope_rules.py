#!/usr/bin/env python3
"""What Pyroscope makes of recorded OTLP profiles requests: series labels and rejections.

Applies the rules of Pyroscope 2.2.1's OTLP ingest and validation to requests recorded by
otlp_receiver.py (one MessageToDict(preserving_proto_field_name) JSON object per line), optionally
after the profiles collector's pipeline from the chart's values (k8s_attributes with a simulated pod,
then the transform statements that set and delete resource attributes). Read from the upstream code
(grafana/pyroscope v2.2.1):

- pkg/ingester/otlp/ingest_handler.go export(): a series per profile (per sample `service.name`
  value): `__delta__`="false", `__otel__`="true", `__name__` (the profile type), every resource
  then scope attribute whose value is a non-empty string or integer (first of a key wins), then
  `service_name` = resource service.name, else "unknown_service[:<process.executable.name>]".
- pkg/ingester/otlp/convert.go: a sample attribute index out of range of the attribute table drops
  the whole profile without an error (serviceNameFromSample); a missing sample type, an empty
  sample value or a stack index out of range rejects the request.
- pkg/model/pprofsplit/pprof_split.go: sample attributes (other than service.name) with a string
  value are added to the series labels where the series has no such label: one series per set.
- pkg/validation/validate.go ValidateLabels: more than 30 label names (counted before
  sanitization: service.name and service_name both count), an empty service_name, a name longer
  than 1024 or a value longer than 2048 bytes reject the profile; with label sanitization on (the
  chart's setting) `.` becomes `_`, any other character outside [A-Za-z0-9_] (or a leading digit)
  rejects, and two names equal after sanitization with different values reject.
- ValidateProfile: more than 16,000 samples; a time older than 1 h or more than 10 min ahead of
  now (reject-older-than / reject-newer-than defaults); a sample type containing `-`.

Usage:
  pyroscope_rules.py FILE [--chart-values VALUES] [--simulate-pod] [--now-ns NS] [--markdown]
prints one line per violation and exits 1 if there is any. --markdown prints instead the table of
labels a Pyroscope user sees for a pod, a host process and a kernel thread (docs/deploy.md).
As a library: Collector.from_values(path), series(req, collector, pod_for), check_request(req, ...).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field

MAX_LABEL_NAMES_PER_SERIES = 30  # -validation.max-label-names-per-series
MAX_LABEL_NAME_LENGTH = 1024  # -validation.max-length-label-name
MAX_LABEL_VALUE_LENGTH = 2048  # -validation.max-length-label-value
MAX_PROFILE_SAMPLES = 16_000  # -validation.max-profile-stacktrace-samples
REJECT_OLDER_THAN_NS = 3600 * 10**9  # -validation.reject-older-than (1h)
REJECT_NEWER_THAN_NS = 600 * 10**9  # -validation.reject-newer-than (10m)
KERNEL_SERVICE_NAME = "kernel"  # what the agent names every kernel thread (resource.rs)


def _int(value, default=0):
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def any_value(value: dict | None) -> str:
    """stringValueFromAnyValue: a string as it is, an integer in decimal, anything else ""."""
    if not value:
        return ""
    if "string_value" in value:
        return value["string_value"]
    if "int_value" in value:
        return str(_int(value["int_value"]))
    return ""


def key_values(attrs: list | None) -> dict[str, str]:
    """Resource or scope attributes as Pyroscope reads them: the first non-empty value of a key."""
    out: dict[str, str] = {}
    for kv in attrs or []:
        value = any_value(kv.get("value"))
        if value and kv.get("key", "") not in out:
            out[kv.get("key", "")] = value
    return out


def sanitize_legacy_label_name(name: str) -> str | None:
    """SanitizeLegacyLabelName: the name with `.` as `_`, or None where Pyroscope rejects it."""
    if not name:
        return None
    for i, ch in enumerate(name):
        if ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ch == "_" or ("0" <= ch <= "9" and i > 0):
            continue
        if ch != ".":
            return None
    return name.replace(".", "_")


# --- the collector ---------------------------------------------------------------------------

_ATTR = r'attributes\["([^"]+)"\]'
_SET_CONCAT = re.compile(
    rf'^set\({_ATTR},\s*Concat\(\[((?:\s*{_ATTR}\s*,?)+)\],\s*"([^"]*)"\)\)(?:\s+where\s+(.+))?$', re.S)
_DELETE = re.compile(r'^delete_key\(attributes,\s*"([^"]+)"\)$')
_COND = re.compile(rf'^{_ATTR}\s*(==|!=)\s*nil$')


def _conditions(text: str | None):
    if not text:
        return []
    out = []
    for part in re.split(r"\s+and\s+", text.strip()):
        m = _COND.match(part.strip())
        if not m:
            raise ValueError(f"unsupported OTTL condition: {part!r}")
        out.append((m.group(1), m.group(2) == "=="))
    return out


@dataclass
class Collector:
    """The chart's profiles pipeline, as far as it changes what becomes series labels.

    Only what the chart uses is understood; anything else is an error, not a silent no-op."""

    steps: list = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: dict) -> "Collector":
        steps = []
        for name in cfg["service"]["pipelines"]["profiles"].get("processors", []):
            block = cfg["processors"][name] or {}
            kind = name.split("/")[0]
            if kind in ("k8s_attributes", "k8sattributes"):
                extract = block.get("extract", {})
                if extract.get("otel_annotations"):
                    raise ValueError(f"{name}: otel_annotations makes every annotation a label")
                tags = list(extract.get("metadata", []))
                tags += [r["tag_name"] for r in extract.get("labels", []) + extract.get("annotations", [])]
                steps.append(("k8s", list(dict.fromkeys(tags))))
            elif kind == "transform":
                for group in block.get("profile_statements", []):
                    if group.get("context") != "resource":
                        raise ValueError(f"{name}: context {group.get('context')!r} not understood")
                    for stmt in group["statements"]:
                        steps.append(("ottl", _parse_statement(" ".join(stmt.split()))))
            else:
                raise ValueError(f"processor {name}: not understood by this simulation")
        return cls(steps)

    @classmethod
    def from_values(cls, path: str) -> "Collector":
        import yaml  # only here: the checker itself needs no third-party package

        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
        return cls.from_config(values["opentelemetry-collector"]["alternateConfig"])

    def extracted(self) -> list[str]:
        return [t for kind, tags in self.steps if kind == "k8s" for t in tags]

    def apply(self, attrs: dict[str, str], pod: dict[str, str] | None) -> tuple[dict, set]:
        """The resource attributes after the pipeline, and the names the collector added."""
        attrs = dict(attrs)
        added: set[str] = set()
        for kind, arg in self.steps:
            if kind == "k8s":
                # k8s_attributes writes only absent or empty keys, and only what it extracts.
                for tag in arg:
                    if pod and tag in pod and not attrs.get(tag):
                        attrs[tag] = pod[tag]
                        added.add(tag)
            elif arg[0] == "delete":
                attrs.pop(arg[1], None)
                added.discard(arg[1])
            else:
                _, target, parts, sep, conds = arg
                if all((attrs.get(k) is None) == is_nil for k, is_nil in conds):
                    if all(attrs.get(p) is not None for p in parts):
                        attrs[target] = sep.join(attrs[p] for p in parts)
                        added.add(target)
        return attrs, added


def _parse_statement(stmt: str):
    m = _DELETE.match(stmt)
    if m:
        return ("delete", m.group(1))
    m = _SET_CONCAT.match(stmt)
    if m:
        parts = re.findall(_ATTR, m.group(2))
        return ("set", m.group(1), parts, m.group(4), _conditions(m.group(5)))
    raise ValueError(f"unsupported OTTL statement: {stmt!r}")


def simulated_pod(attrs: dict[str, str]) -> dict[str, str] | None:
    """What k8s_attributes would find for a profile from a container of a Deployment's pod
    (association by k8s.pod.uid or container.id), with no app.kubernetes.io/name label."""
    uid = attrs.get("k8s.pod.uid")
    if not uid and not attrs.get("container.id"):
        return None
    return {
        "k8s.namespace.name": "shop",
        "k8s.pod.name": "checkout-7d9f8b6c5-x2x4q",
        "k8s.pod.uid": uid or "",
        "k8s.node.name": "node-1",
        "k8s.container.name": "checkout",
        "k8s.deployment.name": "checkout",
        "service.namespace": "shop",
        "service.version": "1.4.2",
    }


# --- Pyroscope -------------------------------------------------------------------------------

@dataclass
class Series:
    where: str
    labels: list  # (name, value, source) in Pyroscope's order, before sanitization
    samples: int


def _profile_name(prof: dict, strings: list) -> str:
    def s(vt, key):
        i = _int((vt or {}).get(key))
        return strings[i] if i is not None and 0 <= i < len(strings) else ""

    st, pt = prof.get("sample_type"), prof.get("period_type")
    kind = f'{s(st, "type_strindex")}:{s(st, "unit_strindex")}'
    if pt and _int(prof.get("period")):
        kind += f':{s(pt, "type_strindex")}:{s(pt, "unit_strindex")}'
    else:
        kind += "::"
    if kind == "samples:count:cpu:nanoseconds":
        return "process_cpu"
    if kind == "off_cpu:nanoseconds::":
        return "off_cpu"
    parts = kind.split(":")
    return parts[2] if len(parts) >= 3 and parts[2] else "process_cpu"


def series(req: dict, collector: Collector | None = None, pod_for=None):
    """Yields (Series, violations of the profile) for every profile of the request."""
    d = req.get("dictionary") or {}
    strings = d.get("string_table", [])
    attr_table = d.get("attribute_table", [])
    stack_table = d.get("stack_table", [])
    for r, rp in enumerate(req.get("resource_profiles", [])):
        raw = key_values((rp.get("resource") or {}).get("attributes"))
        added: set[str] = set()
        attrs = raw
        if collector is not None:
            attrs, added = collector.apply(raw, pod_for(raw) if pod_for else None)
        for s, sp in enumerate(rp.get("scope_profiles", [])):
            scope = key_values((sp.get("scope") or {}).get("attributes"))
            for p, prof in enumerate(sp.get("profiles", [])):
                where = f"resource_profiles[{r}].scope_profiles[{s}].profiles[{p}]"
                problems: list[str] = []
                groups: dict[tuple, int] = {}
                dropped = False
                for i, sample in enumerate(prof.get("samples", [])):
                    labels = []
                    sample_svc = ""
                    for a in sample.get("attribute_indices", []):
                        a = _int(a)
                        if a is None or not 0 <= a < len(attr_table):
                            problems.append(f"{where}.samples[{i}]: attribute index {a} out of range: "
                                            "Pyroscope drops the whole profile without an error")
                            dropped = True
                            break
                        kv = attr_table[a]
                        k = _int(kv.get("key_strindex"))
                        key = strings[k] if k is not None and 0 <= k < len(strings) else None
                        value = any_value(kv.get("value"))
                        if key == "service.name":
                            # A profile of its own, with this service_name (getAttributeValueByKeyOrEmpty).
                            sample_svc = value
                        elif value and key is not None:
                            labels.append((key, value))
                    if dropped:
                        break
                    stack = _int(sample.get("stack_index"))
                    if stack is None or not 0 <= stack < len(stack_table):
                        problems.append(f"{where}.samples[{i}]: invalid stack index {stack}")
                    if not sample.get("values") and not sample.get("timestamps_unix_nano"):
                        problems.append(f"{where}.samples[{i}]: sample value is required")
                    key = (sample_svc, tuple(labels))
                    groups[key] = groups.get(key, 0) + 1
                if not prof.get("sample_type"):
                    problems.append(f"{where}: sample type is missing")
                if dropped or not groups:
                    yield None, problems  # no series: nothing is pushed for this profile
                    continue
                base = [("__delta__", "false", "pyroscope"), ("__otel__", "true", "pyroscope"),
                        ("__name__", _profile_name(prof, strings), "pyroscope")]
                seen = {"__name__"}
                for kvs in (attrs, scope):
                    for k, v in kvs.items():
                        if k not in seen:
                            base.append((k, v, "collector" if k in added else "agent"))
                            seen.add(k)
                svc = attrs.get("service.name") or (
                    "unknown_service" + (f':{attrs["process.executable.name"]}'
                                         if attrs.get("process.executable.name") else ""))
                by_svc: dict[str, int] = {}
                for (sample_svc, _), count in groups.items():
                    by_svc[sample_svc] = by_svc.get(sample_svc, 0) + count
                for (sample_svc, group), count in groups.items():
                    labels = base + [("service_name", sample_svc or svc, "pyroscope")]
                    present = {name for name, _, _ in labels}
                    for k, v in group:
                        if k not in present:
                            labels.append((k, v, "sample"))
                            present.add(k)
                    # Each converted profile (one per sample service.name) is validated once.
                    once = profile_problems(prof, strings, where, by_svc.pop(sample_svc)) \
                        if sample_svc in by_svc else []
                    yield Series(where, labels, count), problems + once
                    problems = []


def profile_problems(prof: dict, strings: list, where: str, n_samples: int) -> list[str]:
    out = []
    if n_samples > MAX_PROFILE_SAMPLES:
        out.append(f"{where}: {n_samples} samples, more than Pyroscope's {MAX_PROFILE_SAMPLES}")
    i = _int((prof.get("sample_type") or {}).get("type_strindex"))
    if i is not None and 0 <= i < len(strings) and "-" in strings[i]:
        out.append(f"{where}: sample type {strings[i]!r} contains '-'")
    return out


def label_problems(s: Series) -> list[str]:
    """ValidateLabels with sanitization on."""
    out = []
    names = [n for n, _, _ in s.labels]
    if len(names) > MAX_LABEL_NAMES_PER_SERIES:
        out.append(f"{s.where}: {len(names)} label names, more than {MAX_LABEL_NAMES_PER_SERIES}: {sorted(names)}")
    values = {}
    for name, value, _ in s.labels:
        if name == "service_name" and not value:
            out.append(f"{s.where}: empty service_name")
        if len(name.encode()) > MAX_LABEL_NAME_LENGTH:
            out.append(f"{s.where}: label name {name[:40]!r}… longer than {MAX_LABEL_NAME_LENGTH}")
        if len(value.encode()) > MAX_LABEL_VALUE_LENGTH:
            out.append(f"{s.where}: value of {name} longer than {MAX_LABEL_VALUE_LENGTH}")
        clean = sanitize_legacy_label_name(name)
        if clean is None:
            out.append(f"{s.where}: label name {name!r} is rejected (only [A-Za-z0-9_.])")
            continue
        if clean in values and values[clean] != value:
            out.append(f"{s.where}: {name} and another label are both {clean} after sanitization, "
                       f"with different values ({values[clean]!r}, {value!r})")
        values.setdefault(clean, value)
    return out


def check_request(req: dict, now_ns: int | None = None, collector: Collector | None = None,
                  pod_for=None) -> list[str]:
    """The reasons Pyroscope would reject (or silently drop) parts of one decoded request."""
    out = []
    if not req.get("dictionary"):
        out.append("missing profile metadata dictionary")
    if "resource_profiles" not in req:
        out.append("missing resource profiles")
    now_ns = now_ns if now_ns is not None else time.time_ns()
    for r, rp in enumerate(req.get("resource_profiles", [])):
        for s, sp in enumerate(rp.get("scope_profiles", [])):
            for p, prof in enumerate(sp.get("profiles", [])):
                t = _int(prof.get("time_unix_nano"))
                if t and not now_ns - REJECT_OLDER_THAN_NS <= t <= now_ns + REJECT_NEWER_THAN_NS:
                    out.append(f"resource_profiles[{r}].scope_profiles[{s}].profiles[{p}]: time "
                               f"{t} is outside the ingestion window (now {now_ns}, -1h/+10m)")
    for s, problems in series(req, collector, pod_for):
        out += problems
        if s is not None:
            out += label_problems(s)
    return out


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --- the table in docs/deploy.md -------------------------------------------------------------

def kind_of(raw: dict[str, str]) -> str:
    if raw.get("k8s.pod.uid") or raw.get("container.id"):
        return "pod"
    if raw.get("service.name") == KERNEL_SERVICE_NAME:
        return "kernel thread"
    return "host process"


def markdown(requests, collector: Collector | None, pod_for=None) -> str:
    """One row per label name, one column per kind of process: of each kind, the series with the
    most samples (the busiest thread of the busiest process)."""
    picked: dict[str, Series] = {}
    for req in requests:
        for rp in req.get("resource_profiles", []):
            kind = kind_of(key_values((rp.get("resource") or {}).get("attributes")))
            one = {**req, "resource_profiles": [rp]}
            for s, _ in series(one, collector, pod_for):
                if s is not None and s.samples > (picked[kind].samples if kind in picked else 0):
                    picked[kind] = s
    kinds = [k for k in ("pod", "host process", "kernel thread") if k in picked]
    # Sanitized name -> kind -> (value, where the value came from). service.name and service_name
    # are one label after sanitization; the value's origin is service.name's where it is set.
    rows: dict[str, dict] = {}
    for kind in kinds:
        for name, value, source in picked[kind].labels:
            cell = rows.setdefault(sanitize_legacy_label_name(name) or name, {})
            if kind not in cell or cell[kind][1] == "pyroscope":
                cell[kind] = (value, source)
    lines = ["| label | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for label, cell in rows.items():
        cells = [f"`{cell[k][0]}` ({cell[k][1]})" if k in cell else "" for k in kinds]
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    counts = [str(len(picked[k].labels)) for k in kinds]
    lines.append("| *label names Pyroscope counts (limit 30)* | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Apply Pyroscope's ingest rules to recorded OTLP requests")
    ap.add_argument("file")
    ap.add_argument("--chart-values", help="the kalypso-pyroscope values.yaml: apply its collector pipeline")
    ap.add_argument("--simulate-pod", action="store_true",
                    help="k8s_attributes finds a Deployment's pod for profiles with a pod uid or container id")
    ap.add_argument("--now-ns", type=int, help="now, for the ingestion window (default: the clock)")
    ap.add_argument("--markdown", action="store_true", help="print the labels table instead")
    args = ap.parse_args(argv)
    try:
        collector = Collector.from_values(args.chart_values) if args.chart_values else None
        requests = load(args.file)
    except (OSError, ValueError, KeyError) as e:
        print(f"pyroscope_rules: {e}", file=sys.stderr)
        return 2
    pod_for = simulated_pod if args.simulate_pod else None
    if args.markdown:
        print(markdown(requests, collector, pod_for))
        return 0
    if not requests:
        print(f"{args.file}: no requests")
        return 1
    violations = [f"request {n}: {v}" for n, req in enumerate(requests, 1)
                  for v in check_request(req, args.now_ns, collector, pod_for)]
    for v in violations:
        print(v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
