"""Helpers for the chart validation suite: Chart.lock digests, placeholder subcharts, rendering.

Everything here works offline: remote subcharts cannot be downloaded on this project's machines,
so a chart is rendered from a temporary copy whose charts/ holds a placeholder (name + version,
no templates) for each remote dependency and the real chart for each file:// dependency.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
BUNDLE = REPO / "argocd" / "bundle"
# Charts that the Argo CD bundle deploys (kalypso-lib is a library used by the others).
APP_CHARTS = sorted(p.name for p in CHARTS.iterdir()
                    if (p / "Chart.yaml").exists() and p.name != "kalypso-lib")
# Extra API versions for `helm template`, as a cluster with the bundle's CRDs would report them,
# so that templates guarded by .Capabilities.APIVersions.Has render too.
CRD_API_VERSIONS = [
    "networking.istio.io/v1/Gateway",
    "networking.istio.io/v1/VirtualService",
    "cert-manager.io/v1/Certificate",
    "cert-manager.io/v1/Issuer",
    "monitoring.coreos.com/v1/PodMonitor",
]
KUBE_VERSION = "1.33.0"


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


# --- Chart.lock -----------------------------------------------------------------------------

# Field order and omitempty of Helm's chart.Dependency (pkg/chart/dependency.go), which is what
# encoding/json follows when Helm hashes the dependencies.
_DEP_FIELDS = [("name", False), ("version", True), ("repository", False), ("condition", True),
               ("tags", True), ("enabled", True), ("import-values", True), ("alias", True)]


def _go_dependency(dep: dict) -> dict:
    out = {}
    for field, omitempty in _DEP_FIELDS:
        value = dep.get(field)
        if omitempty and not value:
            continue
        out[field] = "" if value is None else value
    return out


def _go_json(value) -> str:
    """encoding/json.Marshal: compact, UTF-8, and <, >, & escaped as Go's HTMLEscape does."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def lock_digest(requirements: list[dict], locked: list[dict]) -> str:
    """Helm's resolver.HashReq: sha256 of json.Marshal([2][]*Dependency{req, lock})."""
    data = _go_json([[_go_dependency(d) for d in requirements], [_go_dependency(d) for d in locked]])
    return "sha256:" + hashlib.sha256(data.encode("utf-8")).hexdigest()


def expected_lock_dependencies(chart_yaml: dict) -> list[dict]:
    """What `helm dependency update` records for pinned (exact-version) dependencies."""
    return [{"name": d["name"], "repository": d["repository"], "version": d["version"]}
            for d in chart_yaml.get("dependencies", [])]


def render_lock(chart_yaml: dict, generated: str) -> str:
    locked = expected_lock_dependencies(chart_yaml)
    lock = {"dependencies": locked,
            "digest": lock_digest(chart_yaml.get("dependencies", []), locked),
            "generated": generated}
    return yaml.safe_dump(lock, sort_keys=True, default_flow_style=False)


# --- Rendering ------------------------------------------------------------------------------

def make_placeholder(dest: Path, name: str, version: str) -> None:
    """A subchart with only a Chart.yaml: enough for helm lint and template of the parent."""
    dest.mkdir(parents=True)
    (dest / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version,
                        "description": "offline placeholder for the upstream chart"}))


def stage_chart(chart_dir: Path, workdir: Path) -> Path:
    """Copy a chart to workdir with its dependencies in charts/: placeholders for remote ones."""
    staged = workdir / chart_dir.name
    shutil.copytree(chart_dir, staged, ignore=shutil.ignore_patterns("charts", "*.tgz"))
    meta = load_yaml(chart_dir / "Chart.yaml")
    for dep in meta.get("dependencies", []):
        target = staged / "charts" / dep.get("alias", dep["name"])
        repo = dep["repository"]
        if repo.startswith("file://"):
            shutil.copytree((chart_dir / repo[len("file://"):]).resolve(), target)
        else:
            make_placeholder(target, dep["name"], dep["version"])
    return staged


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def helm_template(chart_path: Path, release: str, namespace: str, values: list[Path] = (),
                  set_values: list[str] = (), api_versions: list[str] = CRD_API_VERSIONS,
                  show_only: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["helm", "template", release, str(chart_path), "--namespace", namespace,
           "--kube-version", KUBE_VERSION]
    for api in api_versions:
        cmd += ["--api-versions", api]
    for v in values:
        cmd += ["-f", str(v)]
    for s in set_values:
        cmd += ["--set", s]
    if show_only:
        cmd += ["--show-only", show_only]
    return run(cmd)


class Workspace:
    """One temporary directory per test session with every chart staged once."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kalypso-charts-"))
        self.staged = {name: stage_chart(CHARTS / name, self.dir) for name in APP_CHARTS}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def bundle_values() -> dict:
    return load_yaml(BUNDLE / "values.yaml")


def app_namespace(chart: str) -> str:
    return bundle_values()["apps"][chart]["namespace"]
