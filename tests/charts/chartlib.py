"""Helpers for the chart validation suite: Chart.lock digests, staging charts with their real
subcharts (placeholders only where none is available), and rendering as Argo CD does.

Everything here works offline: remote subcharts cannot be downloaded on this project's machines,
so a chart is rendered from a temporary copy whose charts/ holds the upstream packages (see
"Where subcharts come from") and the real chart for each file:// dependency.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
BUNDLE = REPO / "argocd" / "bundle"
# Charts that the Argo CD bundle deploys (kalypso-lib is a library used by the others).
APP_CHARTS = sorted(p.name for p in CHARTS.iterdir()
                    if (p / "Chart.yaml").exists() and p.name != "kalypso-lib")


# --- Chart.lock -----------------------------------------------------------------------------

# Field order and omitempty of Helm's chart.Dependency (pkg/chart/dependency.go), which is what
# encoding/json follows when Helm hashes the dependencies.
_DEP_FIELDS = [("name", False), ("version", True), ("repository", False), ("condition", True),
               ("tags", True), ("enabled", True), ("import-values", True), ("alias", True)]


def _go_dependency(dep: dict) -> dict:
    out = {}
    for key, omitempty in _DEP_FIELDS:
        value = dep.get(key)
        if omitempty and not value:
            continue
        out[key] = "" if value is None else value
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


# --- Where subcharts come from ---------------------------------------------------------------
#
# A remote dependency is rendered from the real upstream package whenever one is available:
#   1. charts/<chart>/charts/<name>-<version>.tgz, what `helm dependency build` leaves for a user
#      with network access;
#   2. $KALYPSO_UPSTREAM_CHARTS/<name>-<version>.tgz (CI: ../shared/upstream-charts, packaged from
#      upstream git because these machines cannot reach the Helm repositories).
# Only a dependency found in neither is replaced by a placeholder (a Chart.yaml and nothing else),
# and the suite says which charts that left unchecked against their real subcharts.

UPSTREAM_ENV = "KALYPSO_UPSTREAM_CHARTS"


def upstream_dir() -> Path | None:
    raw = os.environ.get(UPSTREAM_ENV, "")
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = (REPO / path).resolve()
    if not path.is_dir():
        # Set but wrong must not quietly fall back to placeholders: that is how the istio
        # schema failure stayed hidden.
        raise RuntimeError(f"{UPSTREAM_ENV}={raw}: no such directory")
    return path


def packaged_chart_meta(tgz: Path) -> dict:
    """Chart.yaml of a `helm package` archive (<name>/Chart.yaml at the top)."""
    with tarfile.open(tgz) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] == "Chart.yaml":
                return yaml.safe_load(tar.extractfile(member).read())
    raise ValueError(f"{tgz}: no Chart.yaml at the top of the archive")


def find_package(chart_dir: Path | None, name: str, version: str, upstream: Path | None) -> Path | None:
    filename = f"{name}-{version}.tgz"
    for folder in (chart_dir and chart_dir / "charts", upstream):
        if folder is None or not (folder / filename).is_file():
            continue
        meta = packaged_chart_meta(folder / filename)
        if (meta.get("name"), str(meta.get("version"))) != (name, str(version)):
            raise ValueError(f"{folder / filename} holds {meta.get('name')} {meta.get('version')}")
        return folder / filename
    return None


def make_placeholder(dest: Path, name: str, version: str) -> None:
    """A subchart with only a Chart.yaml: enough for helm lint and template of the parent."""
    dest.mkdir(parents=True)
    (dest / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version,
                        "description": "offline placeholder for the upstream chart"}))


@dataclass
class Staged:
    path: Path                                        # what helm renders (a directory or a .tgz)
    real: dict[str, Path] = field(default_factory=dict)   # dependency -> package used
    placeholders: list[str] = field(default_factory=list)  # "name version" stood in for


def stage_chart(chart_dir: Path, workdir: Path, upstream: Path | None) -> Staged:
    """Copy a chart to workdir with its dependencies in charts/ (never writing into `upstream`)."""
    staged = Staged(workdir / chart_dir.name)
    shutil.copytree(chart_dir, staged.path, ignore=shutil.ignore_patterns("charts"))
    (staged.path / "charts").mkdir()
    for dep in load_yaml(chart_dir / "Chart.yaml").get("dependencies", []):
        repo = dep["repository"]
        if repo.startswith("file://"):
            shutil.copytree((chart_dir / repo[len("file://"):]).resolve(),
                            staged.path / "charts" / dep["name"])
            continue
        package = find_package(chart_dir, dep["name"], dep["version"], upstream)
        if package:
            shutil.copy(package, staged.path / "charts" / package.name)
            staged.real[dep.get("alias", dep["name"])] = package
        else:
            make_placeholder(staged.path / "charts" / dep.get("alias", dep["name"]), dep["name"],
                             dep["version"])
            staged.placeholders.append(f"{dep['name']} {dep['version']}")
    return staged


# --- Rendering -------------------------------------------------------------------------------

KUBE_VERSION = "1.33.0"
# The API versions that a dependency's CRDs serve, for when only a placeholder stands in for it
# (so that templates gated on them still render). test_render.py checks each list against the
# CRDs of the real package whenever that is available.
PLACEHOLDER_APIS = {
    "base": ["networking.istio.io/v1/Gateway", "networking.istio.io/v1/VirtualService"],
    "cert-manager": ["cert-manager.io/v1/Certificate", "cert-manager.io/v1/Issuer"],
}
# Argo CD does not apply Helm test hooks (docs/user-guide/helm.md, "Helm Hooks").
HELM_TEST_HOOKS = {"test", "test-success", "test-failure"}


# libyaml's loader: the pure-Python one takes seconds on the upstream charts' CRDs.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]


_SOURCE_RE = re.compile(r"^# Source: (\S+)", re.M)
_DOC_SEP_RE = re.compile(r"^---[ \t]*$", re.M)


def load_all_with_sources(text: str) -> list[tuple[str, dict]]:
    """(template path, object) for each document of `helm template` output; the path is what
    helm writes as "# Source:", e.g. kalypso-minio/charts/minio/templates/deployment.yaml."""
    out = []
    for chunk in _DOC_SEP_RE.split(text):
        doc = yaml.load(chunk, Loader=_Loader)
        if doc:
            m = _SOURCE_RE.search(chunk)
            out.append((m[1] if m else "", doc))
    return out


def from_subchart(source: str) -> bool:
    """True for an object an upstream subchart (or a chart used as is) renders, not our templates."""
    return "/charts/" in source or not source.startswith("kalypso-")


# Cluster-scoped kinds the bundle renders; every other kind without a namespace gets the
# Application's destination namespace, as Argo CD does when it applies it.
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "PriorityClass",
                  "StorageClass", "PersistentVolume", "APIService", "IngressClass", "RuntimeClass",
                  "ClusterIssuer"}


def with_destination_namespace(docs: list[dict], namespace: str) -> list[dict]:
    for doc in docs:
        if doc.get("kind") not in CLUSTER_SCOPED:
            doc.setdefault("metadata", {}).setdefault("namespace", namespace)
    return docs


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def helm_template(chart_path: Path, release: str, namespace: str, values: list[Path] = (),
                  set_values: list[str] = (), api_versions: list[str] = (),
                  show_only: str | None = None, include_crds: bool = False) -> subprocess.CompletedProcess:
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
    if include_crds:
        cmd += ["--include-crds"]
    return run(cmd)


def crd_api_versions(docs: list[dict]) -> set[str]:
    """What Argo CD passes as --api-versions once these CRDs are served: group/version and
    group/version/Kind for each served version (util/argo APIResourcesToStrings)."""
    out = set()
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec.get("versions", []):
            if version.get("served", True):
                out.add(f"{spec['group']}/{version['name']}")
                out.add(f"{spec['group']}/{version['name']}/{spec['names']['kind']}")
    return out


def served_kinds(docs: list[dict]) -> set[tuple[str, str]]:
    """(apiVersion, kind) of every custom resource these CRDs serve."""
    return {tuple(a.rsplit("/", 1)) for a in crd_api_versions(docs) if a.count("/") == 2}


def without_test_hooks(docs: list[dict]) -> list[dict]:
    def hooks(doc):
        value = ((doc.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "")
        return {h.strip() for h in value.split(",") if h.strip()}
    return [d for d in docs if not hooks(d) & HELM_TEST_HOOKS]


# --- Argo CD Applications --------------------------------------------------------------------

@dataclass
class ArgoApp:
    """One child Application of the bundle, as Argo CD's repo server will render it."""
    name: str
    namespace: str
    release: str
    wave: int
    values: dict
    doc: dict

    @property
    def sync_options(self) -> list[str]:
        return self.doc["spec"]["syncPolicy"].get("syncOptions", [])


def argo_apps(bundle_docs: list[dict]) -> dict[str, ArgoApp]:
    apps = {}
    for doc in bundle_docs:
        if doc["kind"] != "Application":
            continue
        helm = doc["spec"]["source"].get("helm", {})
        apps[doc["metadata"]["name"]] = ArgoApp(
            name=doc["metadata"]["name"], namespace=doc["spec"]["destination"]["namespace"],
            release=helm.get("releaseName", doc["metadata"]["name"]),
            wave=int(doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0")),
            values=helm.get("valuesObject") or {}, doc=doc)
    return dict(sorted(apps.items(), key=lambda kv: (kv[1].wave, kv[0])))


def argo_template(staged: Path, app: ArgoApp, api_versions, workdir: Path,
                  set_values: list[str] = (), extra_values: dict | None = None) -> subprocess.CompletedProcess:
    """`helm template` as Argo CD runs it: release and namespace of the Application, its
    valuesObject as a values file on top of the chart's own, the cluster's API versions, CRDs."""
    files = []
    for i, values in enumerate(v for v in (app.values, extra_values) if v):
        fd, path = tempfile.mkstemp(prefix=f"{app.name}-", suffix=".yaml", dir=workdir)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(values, f)
        files.append(Path(path))
    try:
        return helm_template(staged, app.release, app.namespace, values=files, set_values=set_values,
                             api_versions=sorted(api_versions), include_crds=True)
    finally:
        for path in files:
            path.unlink()


class Workspace:
    """One temporary directory per test session with every chart staged once."""

    def __init__(self, cert_manager: dict) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kalypso-charts-"))
        self.upstream = upstream_dir()
        self.sources: dict[str, Staged] = {
            name: stage_chart(CHARTS / name, self.dir, self.upstream) for name in APP_CHARTS}
        # cert-manager's Application takes the chart straight from its Helm repository.
        package = find_package(None, cert_manager["chart"], cert_manager["version"], self.upstream)
        if package:
            shutil.copy(package, self.dir / package.name)
            self.sources["cert-manager"] = Staged(self.dir / package.name, real={"cert-manager": package})
        self.staged = {name: s.path for name, s in self.sources.items()}

    def placeholder_report(self) -> list[str]:
        lines = [f"{name}: placeholder for {', '.join(s.placeholders)}"
                 for name, s in self.sources.items() if s.placeholders]
        if "cert-manager" not in self.sources:
            lines.append("cert-manager: not rendered (its package is not available)")
        return lines

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def bundle_values() -> dict:
    return load_yaml(BUNDLE / "values.yaml")


def app_namespace(chart: str) -> str:
    return bundle_values()["apps"][chart]["namespace"]
