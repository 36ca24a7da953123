"""Every value the bundle sets under a subchart has an effect on the real chart (valueeffects.py).

Seven keys of the earlier bundle did nothing on the real charts (a bucket Loki OSS never uses,
MinIO's replicas in standalone mode, a pipeline setting that a preset overrides, ...): they read
as configuration and were not. Here each one is changed, rendered again and compared.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import chartlib
import valueeffects
from chartlib import APP_CHARTS, CHARTS, load_yaml

# Where the generic change (valueeffects.mutate) would not render, the other valid setting to try.
ALTERNATIVES = {
    # Enumerations: the chart's schema refuses any other string.
    ("kalypso-pyroscope", "opentelemetry-collector.mode"): "statefulset",
    ("kalypso-pyroscope", "opentelemetry-collector.service.type"): "NodePort",
}

# Values set although changing them changes nothing in the render: {app: {dotted key: reason}}.
# Only a value set to document a default that the bundle relies on belongs here, with the reason
# it is worth stating. Empty today: every key that failed was removed or fixed instead (MinIO
# replicas/drivesPerNode, Loki's admin bucket, Grafana's testFramework, the operator's
# autoGenerateCert, the collector's profiles processors and pod_association, istio's base: {}).
NO_EFFECT_ALLOWED: dict[str, dict[str, str]] = {
}


def _subchart_keys(chart: str) -> set[str]:
    return {d.get("alias", d["name"]) for d in load_yaml(CHARTS / chart / "Chart.yaml").get("dependencies", [])
            if not d["repository"].startswith("file://")}


def _probes(app: str, argo_app) -> list[tuple[str, tuple, object]]:
    """(where, path, new value) for every leaf the bundle sets under this app's upstream chart(s)."""
    probes = []
    if app in APP_CHARTS:
        keys = _subchart_keys(app)
        own = load_yaml(CHARTS / app / "values.yaml") or {}
        for path, value in valueeffects.leaves({k: v for k, v in own.items() if k in keys}):
            probes.append(("values.yaml", path, value))
        app_values = {k: v for k, v in argo_app.values.items() if k in keys}
    else:  # an upstream chart used as is (cert-manager): everything the Application sets
        app_values = argo_app.values
    for path, value in valueeffects.leaves(app_values):
        if path:
            probes.append(("valuesObject", path, value))
    return probes


class _Renderer:
    """A private copy of each staged chart per worker thread: a probe rewrites its values.yaml."""

    def __init__(self, workspace, apps, apis):
        self.workspace, self.apps, self.apis = workspace, apps, apis
        self.local = threading.local()

    def render(self, app: str, own_values: dict | None, app_values: dict) -> str | None:
        copies = self.local.__dict__.setdefault("copies", {})
        if app not in copies:
            src = self.workspace.staged[app]
            dest = Path(tempfile.mkdtemp(prefix="effects-", dir=self.workspace.dir)) / src.name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dest)
            copies[app] = dest
        chart = copies[app]
        if own_values is not None:
            (chart / "values.yaml").write_text(yaml.safe_dump(own_values))
        argo_app = copy_app(self.apps[app], app_values)
        out = chartlib.argo_template(chart, argo_app, self.apis, self.workspace.dir)
        if out.returncode != 0:
            return None, out.stderr
        return valueeffects.applied_text(out.stdout), ""


def copy_app(app, values):
    clone = chartlib.ArgoApp(**{**app.__dict__, "values": values})
    return clone


def _check(renderer, app, argo_app, baseline, where, path, value):
    key = (app, ".".join(map(str, path)))
    new = ALTERNATIVES.get(key, valueeffects.mutate(value))
    own = load_yaml(CHARTS / app / "values.yaml") if app in APP_CHARTS else None
    app_values = argo_app.values
    if where == "values.yaml":
        own = valueeffects.with_leaf(own, path, new)
    else:
        app_values = valueeffects.with_leaf(app_values, path, new)
    text, error = renderer.render(app, own, app_values)
    if text is None:
        # A chart that refuses the other value in its own template (`fail`) reads the key: that
        # is an effect. Any other failure (a schema, ours or upstream) proves nothing.
        if f"execution error at ({app}/charts/" in error or (
                app not in APP_CHARTS and "execution error at (" in error):
            return key, None
        return key, f"does not render with {new!r}: add a valid alternative to ALTERNATIVES\n{error.strip()}"
    if text == baseline:
        return key, f"no effect ({where}: {value!r} -> {new!r})"
    return key, None


@pytest.fixture(scope="module")
def effects(workspace, argo_apps, steady_apis):
    """{app: {key: problem or None}} for every app whose real chart is available."""
    renderer = _Renderer(workspace, argo_apps, steady_apis)
    apps = [a for a in argo_apps if a in workspace.sources and workspace.sources[a].real
            and not workspace.sources[a].placeholders]
    baselines = {}
    for app in apps:
        own = load_yaml(CHARTS / app / "values.yaml") if app in APP_CHARTS else None
        baselines[app], error = renderer.render(app, own, argo_apps[app].values)
        assert baselines[app] is not None, f"{app} does not render: {error}"
    tasks = [(app, *probe) for app in apps for probe in _probes(app, argo_apps[app])]
    results = {app: {} for app in apps}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        for key, problem in pool.map(
                lambda t: _check(renderer, t[0], argo_apps[t[0]], baselines[t[0]], *t[1:]), tasks):
            results[key[0]][key[1]] = problem
    return results


@pytest.mark.parametrize("app", [*[c for c in APP_CHARTS if _subchart_keys(c)], "cert-manager"])
def test_every_value_set_under_a_subchart_changes_the_render(effects, app):
    if app not in effects:
        pytest.skip(f"{app}: no real upstream chart here, or a placeholder among its subcharts")
    problems = {k: p for k, p in effects[app].items() if p and k not in NO_EFFECT_ALLOWED.get(app, {})}
    assert effects[app], f"{app}: no value probed"
    assert not problems, "\n".join(f"{app}: {k}: {p}" for k, p in sorted(problems.items()))


def test_a_key_the_chart_does_not_read_is_caught(workspace, argo_apps, steady_apis):
    """The earlier bundle's MinIO `replicas` in standalone mode: set, and read by nothing."""
    if "minio" not in workspace.sources["kalypso-minio"].real:
        pytest.skip("needs the real minio chart")
    renderer = _Renderer(workspace, argo_apps, steady_apis)
    baseline, _ = renderer.render("kalypso-minio", load_yaml(CHARTS / "kalypso-minio/values.yaml"),
                                  argo_apps["kalypso-minio"].values)
    key, problem = _check(renderer, "kalypso-minio", argo_apps["kalypso-minio"], baseline,
                          "values.yaml", ("minio", "replicas"), 4)
    assert problem and problem.startswith("no effect"), problem
