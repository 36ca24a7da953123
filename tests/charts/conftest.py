"""Shared fixtures: every chart is staged once with its real subcharts where available, and every
Application of the bundle is rendered once per pass, as Argo CD renders it."""
from __future__ import annotations

import copy
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import chartlib
from chartlib import APP_CHARTS, BUNDLE, CHARTS, REPO, ArgoApp, load_all, load_yaml

REPO_URL = "https://example.invalid/kalypso.git"


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_bundle(mode: str, *extra: str) -> list[dict]:
    result = chartlib.helm_template(BUNDLE, "kalypso", "argocd",
                                    set_values=[f"repoURL={REPO_URL}", f"mode={mode}", *extra])
    assert result.returncode == 0, f"helm template argocd/bundle ({mode}) failed:\n{result.stderr}"
    return load_all(result.stdout)


@pytest.fixture(scope="session")
def bundle_values() -> dict:
    return chartlib.bundle_values()


@pytest.fixture(scope="session")
def bundle_bootstrap() -> list[dict]:
    return render_bundle("bootstrap")


@pytest.fixture(scope="session")
def bundle_apps() -> list[dict]:
    return render_bundle("apps")


@pytest.fixture(scope="session")
def argo_apps(bundle_apps) -> dict[str, ArgoApp]:
    """The child Applications, in wave order: what the renders below take their parameters from."""
    return chartlib.argo_apps(bundle_apps)


@pytest.fixture(scope="session")
def namespaces(argo_apps) -> dict[str, str]:
    return {name: app.namespace for name, app in argo_apps.items()}


@pytest.fixture(scope="session")
def workspace(bundle_values):
    ws = chartlib.Workspace(bundle_values["certManager"])
    yield ws
    ws.close()


@pytest.fixture(scope="session")
def chart_values(bundle_values) -> dict[str, dict]:
    """Each chart's values as the bundle deploys it: values.yaml + the bundle's per-app values."""
    return {name: deep_merge(load_yaml(CHARTS / name / "values.yaml") or {},
                             bundle_values["apps"][name].get("values") or {})
            for name in APP_CHARTS}


@dataclass
class BundleRender:
    """Every Application rendered twice, as Argo CD's repo server renders it:
    first: on the first sync, when only the CRDs of earlier waves are served;
    steady: once the whole bundle is installed and every CRD it brings is served."""
    apps: dict[str, ArgoApp]
    first: dict[str, list[dict]]
    steady: dict[str, list[dict]]
    first_apis: dict[str, set[str]]
    steady_apis: set[str]
    errors: dict[str, str]
    origins: dict[int, str]   # id(object) -> the template that rendered it ("# Source:")

    def source(self, doc: dict) -> str:
        return self.origins[id(doc)]

    def ours(self, docs: list[dict]) -> list[dict]:
        """Objects that this repository's templates render (not an upstream subchart)."""
        return [d for d in docs if not chartlib.from_subchart(self.source(d))]


def _provided_apis(workspace, name: str, docs: list[dict] | None) -> set[str]:
    """API versions an Application makes served: its CRDs, or the known list of a placeholder."""
    apis = chartlib.crd_api_versions(docs or [])
    source = workspace.sources.get(name)
    stand_ins = ([p.split()[0] for p in source.placeholders] if source else [name])
    for dep in stand_ins:
        for api in chartlib.PLACEHOLDER_APIS.get(dep, []):
            apis |= {api, api.rsplit("/", 1)[0]}
    return apis


def render_apps(workspace, apps: dict[str, ArgoApp]) -> BundleRender:
    out = BundleRender(apps, {}, {}, {}, set(), {}, {})

    def render(name, apis, target, label):
        result = chartlib.argo_template(workspace.staged[name], apps[name], apis, workspace.dir)
        if result.returncode != 0:
            out.errors[f"{name} ({label})"] = result.stderr
            return
        pairs = chartlib.load_all_with_sources(result.stdout)
        docs = chartlib.with_destination_namespace(
            chartlib.without_test_hooks([d for _, d in pairs]), apps[name].namespace)
        out.origins.update({id(d): src for src, d in pairs})
        target[name] = docs

    renderable = [n for n in apps if n in workspace.staged]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for wave in sorted({a.wave for a in apps.values()}):
            earlier = [n for n, a in apps.items() if a.wave < wave]
            apis = set().union(*(_provided_apis(workspace, n, out.first.get(n)) for n in earlier))
            names = [n for n in renderable if apps[n].wave == wave]
            for n in names:
                out.first_apis[n] = apis
            list(pool.map(lambda n: render(n, apis, out.first, "first sync"), names))
        out.steady_apis = set().union(*(_provided_apis(workspace, n, out.first.get(n)) for n in apps))
        list(pool.map(lambda n: render(n, out.steady_apis, out.steady, "steady state"), renderable))
    return out


@pytest.fixture(scope="session")
def bundle_render(workspace, argo_apps) -> BundleRender:
    return render_apps(workspace, argo_apps)


@pytest.fixture(scope="session")
def rendered(bundle_render) -> dict[str, list[dict]]:
    """The steady-state render of every Application that could be rendered, by Application name."""
    assert not bundle_render.errors, "\n".join(f"{k}:\n{v}" for k, v in bundle_render.errors.items())
    return bundle_render.steady


@pytest.fixture(scope="session")
def steady_apis(bundle_render) -> list[str]:
    return sorted(bundle_render.steady_apis)


# --- Reporting -------------------------------------------------------------------------------

def placeholder_report() -> list[str]:
    """Which charts are checked against placeholders, found without staging anything."""
    upstream = chartlib.upstream_dir()
    lines = []
    for name in APP_CHARTS:
        missing = [f"{d['name']} {d['version']}"
                   for d in load_yaml(CHARTS / name / "Chart.yaml").get("dependencies", [])
                   if not d["repository"].startswith("file://")
                   and not chartlib.find_package(CHARTS / name, d["name"], d["version"], upstream)]
        if missing:
            lines.append(f"{name}: placeholder for {', '.join(missing)}")
    cm = chartlib.bundle_values()["certManager"]
    if not chartlib.find_package(None, cm["chart"], cm["version"], upstream):
        lines.append(f"cert-manager: not rendered ({cm['chart']}-{cm['version']}.tgz not available)")
    return lines


def pytest_terminal_summary(terminalreporter):
    upstream = os.environ.get(chartlib.UPSTREAM_ENV) or "(unset)"
    lines = placeholder_report()
    terminalreporter.write_line(f"Upstream subcharts: {chartlib.UPSTREAM_ENV}={upstream}")
    terminalreporter.write_line("Checked against placeholders, not the real subcharts: "
                                + ("none" if not lines else ""))
    for line in lines:
        terminalreporter.write_line(f"  {line}")


# The closing line that CI reads ("N passed, N failed") is printed by run.sh from this file,
# after pytest's own summary, so that it is the last line of the output.
_counts = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if report.when == "call":
        if report.passed:
            _counts["passed"] += 1
        elif report.failed:
            _counts["failed"] += 1
        elif report.skipped:
            _counts["skipped"] += 1
    elif report.failed:  # an error in setup or teardown counts as a failure
        _counts["failed"] += 1
    elif report.skipped and report.when == "setup":
        _counts["skipped"] += 1


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("KALYPSO_COUNTS_FILE")
    if path:
        Path(path).write_text(json.dumps(_counts))
