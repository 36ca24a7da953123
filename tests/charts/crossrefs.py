"""Resolve every <service>.<namespace>.svc[.cluster.local][:port] in the bundle to a Service."""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from chartlib import REPO, load_yaml

URL_RE = re.compile(
    r"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?"
    r"(?P<svc>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.(?P<ns>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
    r"\.svc(?:\.cluster\.local)?\.?(?::(?P<port>\d+))?(?![-a-z0-9.])")
DEFAULT_PORTS = {"http": 80, "https": 443, "grpc": 80}


@dataclass(frozen=True)
class Ref:
    source: str
    text: str
    service: str
    namespace: str
    port: int | None


def find_refs(source: str, text: str) -> list[Ref]:
    refs = []
    for m in URL_RE.finditer(text):
        port = int(m["port"]) if m["port"] else DEFAULT_PORTS.get(m["scheme"] or "")
        refs.append(Ref(source, m[0], m["svc"], m["ns"], port))
    return refs


def dig(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def fullname(rule: str, override, release: str, chart_name: str | None) -> str:
    if override:
        return str(override)
    if rule == "name-or-release":
        return release
    return release if chart_name in release else f"{release}-{chart_name}"


def upstream_services(chart_values: dict[str, dict], namespaces: dict[str, str]) -> dict:
    """{(namespace, service): {ports}} for upstream subcharts, from the documented table."""
    table = load_yaml(REPO / "tests/charts/upstream-services.yaml")["services"]
    known: dict[tuple[str, str], set[int]] = {}
    for entry in table:
        chart = entry["chart"]
        if chart not in chart_values:
            continue
        values = chart_values[chart]
        # Release name = Argo CD Application name = chart name (argocd/bundle).
        fn = fullname(entry["rule"], dig(values, entry["nameFrom"]), chart, entry.get("chartName"))
        for svc in entry["services"]:
            ports = set()
            for p in svc["ports"]:
                if isinstance(p, int):
                    ports.add(p)
                else:
                    on = dig(values, p["when"])
                    if (p["default"] if on is None else on):
                        ports.add(p["port"])
            key = (namespaces[chart], svc["name"].format(fullname=fn))
            known.setdefault(key, set()).update(ports)
    return known


def rendered_services(rendered: dict[str, list[dict]], namespaces: dict[str, str]) -> dict:
    known: dict[tuple[str, str], set[int]] = {}
    for chart, docs in rendered.items():
        for doc in docs:
            if doc.get("kind") == "Service":
                ns = doc["metadata"].get("namespace", namespaces[chart])
                ports = {p["port"] for p in doc["spec"].get("ports", [])}
                known.setdefault((ns, doc["metadata"]["name"]), set()).update(ports)
    return known


def unresolved(refs: list[Ref], known: dict) -> list[str]:
    problems = []
    for ref in refs:
        ports = known.get((ref.namespace, ref.service))
        if ports is None:
            problems.append(f"{ref.source}: {ref.text} -> no Service {ref.service} in namespace {ref.namespace}")
        elif ref.port is not None and ref.port not in ports:
            problems.append(f"{ref.source}: {ref.text} -> Service {ref.namespace}/{ref.service} "
                            f"has ports {sorted(ports)}, not {ref.port}")
    return problems


def refs_in_values(chart_values: dict[str, dict], bundle_values: dict) -> list[Ref]:
    refs = []
    for chart, values in chart_values.items():
        refs += find_refs(f"charts/{chart}/values.yaml", yaml.safe_dump(values))
    refs += find_refs("argocd/bundle/values.yaml", yaml.safe_dump(bundle_values))
    return refs


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def refs_in_rendered(rendered: dict[str, list[dict]]) -> list[Ref]:
    """URLs in every string of every rendered object (config files are strings inside ConfigMaps)."""
    refs = []
    for chart, docs in rendered.items():
        for doc in docs:
            source = f"rendered {chart} {doc['kind']}/{doc['metadata']['name']}"
            for text in _strings(doc):
                if ".svc" in text:
                    refs += find_refs(source, text)
    return refs
