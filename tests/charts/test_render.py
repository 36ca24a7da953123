"""Rendering as Argo CD does, against the real subcharts: where the packages come from, both
passes of every Application, and our schemas against the upstream charts' own defaults."""
from __future__ import annotations

import io
import json
import os
import tarfile

import jsonschema
import pytest
import yaml

import chartlib
from conftest import deep_merge
from chartlib import APP_CHARTS, CHARTS, load_yaml

APPLICATIONS = [*APP_CHARTS, "cert-manager"]


# --- Where subcharts come from ---------------------------------------------------------------

def _package(path, name, version, values=None):
    """A minimal `helm package` archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for member, body in ((f"{name}/Chart.yaml", {"apiVersion": "v2", "name": name, "version": version}),
                             (f"{name}/values.yaml", values or {})):
            data = yaml.safe_dump(body).encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _chart(root, deps):
    root.mkdir(parents=True)
    (root / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": root.name, "version": "0.1.0",
                                                     "dependencies": deps}))
    (root / "values.yaml").write_text("{}\n")


def test_a_package_from_helm_dependency_build_comes_before_the_shared_directory(tmp_path):
    deps = [{"name": "a", "version": "1.0.0", "repository": "https://example.invalid"},
            {"name": "b", "version": "2.0.0", "repository": "https://example.invalid"},
            {"name": "c", "version": "3.0.0", "repository": "https://example.invalid"}]
    _chart(tmp_path / "src/mine", deps)
    _package(tmp_path / "src/mine/charts/a-1.0.0.tgz", "a", "1.0.0")
    _package(tmp_path / "shared/a-1.0.0.tgz", "a", "1.0.0")
    _package(tmp_path / "shared/b-2.0.0.tgz", "b", "2.0.0")
    staged = chartlib.stage_chart(tmp_path / "src/mine", tmp_path / "work", tmp_path / "shared")
    assert staged.real == {"a": tmp_path / "src/mine/charts/a-1.0.0.tgz", "b": tmp_path / "shared/b-2.0.0.tgz"}
    assert staged.placeholders == ["c 3.0.0"]
    assert sorted(p.name for p in (staged.path / "charts").iterdir()) == ["a-1.0.0.tgz", "b-2.0.0.tgz", "c"]
    # Nothing is written where the packages came from.
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["a-1.0.0.tgz", "b-2.0.0.tgz"]


def test_a_package_that_is_not_what_its_name_says_is_refused(tmp_path):
    _package(tmp_path / "shared/a-1.0.0.tgz", "a", "1.0.1")
    with pytest.raises(ValueError, match="holds a 1.0.1"):
        chartlib.find_package(None, "a", "1.0.0", tmp_path / "shared")


def test_a_missing_upstream_directory_fails_instead_of_falling_back_to_placeholders(monkeypatch, tmp_path):
    monkeypatch.setenv(chartlib.UPSTREAM_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="no such directory"):
        chartlib.upstream_dir()
    monkeypatch.setenv(chartlib.UPSTREAM_ENV, "")
    assert chartlib.upstream_dir() is None


def test_a_relative_upstream_directory_is_taken_from_the_repository(monkeypatch):
    monkeypatch.setenv(chartlib.UPSTREAM_ENV, "charts")
    assert chartlib.upstream_dir() == CHARTS


# --- Both passes -----------------------------------------------------------------------------

@pytest.mark.parametrize("app", APPLICATIONS)
def test_the_application_renders_on_the_first_sync_and_in_steady_state(bundle_render, workspace, app):
    if app not in workspace.staged:
        pytest.skip(f"{app}: its chart is not available here")
    errors = {k: v for k, v in bundle_render.errors.items() if k.startswith(f"{app} (")}
    assert not errors, "\n".join(f"{k}:\n{v}" for k, v in errors.items())
    assert app in bundle_render.first and app in bundle_render.steady
    if workspace.sources[app].real:
        assert bundle_render.first[app] and bundle_render.steady[app]


def test_the_first_sync_applies_only_kinds_that_are_served_by_then(bundle_render, argo_apps):
    """On the first sync a child may apply a custom resource only if an earlier wave installed
    its CRD, or the child installs it itself and skips the dry run for it."""
    wrong = []
    for app, docs in bundle_render.first.items():
        own = chartlib.served_kinds(docs)
        served = {tuple(a.rsplit("/", 1)) for a in bundle_render.first_apis[app] if a.count("/") == 2}
        skip_dry_run = "SkipDryRunOnMissingResource=true" in argo_apps[app].sync_options
        for d in docs:
            kind = (d["apiVersion"], d["kind"])
            if kind in served or (kind in own and skip_dry_run) or "." not in d["apiVersion"].split("/")[0] \
                    or d["apiVersion"].split("/")[0].endswith("k8s.io"):
                continue
            wrong.append(f"{app}: {d['kind']}/{d['metadata']['name']} ({d['apiVersion']})")
    assert not wrong, "\n".join(wrong)


def test_crd_gated_objects_appear_once_their_crds_are_served(bundle_render, workspace):
    """kalypso-istio's Gateway waits for its own CRDs (it is not in the first sync); Argo CD adds
    it on the next comparison, when the cluster serves networking.istio.io."""
    if "kalypso-istio" not in bundle_render.first:
        pytest.skip("kalypso-istio did not render")
    kinds = lambda docs: {d["kind"] for d in docs}
    assert "Gateway" not in kinds(bundle_render.first["kalypso-istio"])
    assert "Gateway" in kinds(bundle_render.steady["kalypso-istio"])


def test_placeholder_api_lists_match_the_real_crds(rendered, workspace):
    """PLACEHOLDER_APIS stands in for a missing package: it must say what the real one serves."""
    real = {"base": ("kalypso-istio", "base"), "cert-manager": ("cert-manager", "cert-manager")}
    checked = 0
    for dep, apis in chartlib.PLACEHOLDER_APIS.items():
        app, name = real[dep]
        if app not in workspace.sources or name not in workspace.sources[app].real:
            continue
        served = chartlib.crd_api_versions(rendered[app])
        assert set(apis) <= served, (dep, sorted(set(apis) - served))
        checked += 1
    if not checked:
        pytest.skip("no real package of a placeholder here")


# --- Our schemas against the upstream defaults -----------------------------------------------

def _without_required(node, under_not=False):
    """The schema minus what it demands we set: `required` lists outside `not`."""
    if isinstance(node, list):
        return [_without_required(n, under_not) for n in node]
    if not isinstance(node, dict):
        return node
    return {k: _without_required(v, under_not or k == "not") for k, v in node.items()
            if not (k == "required" and not under_not)}


def _package_values(tgz) -> dict:
    with tarfile.open(tgz) as tar:
        name = tar.getmembers()[0].name.split("/")[0]
        return yaml.safe_load(tar.extractfile(f"{name}/values.yaml").read()) or {}


@pytest.mark.parametrize("chart", [c for c in APP_CHARTS if load_yaml(CHARTS / c / "Chart.yaml").get("dependencies")])
def test_our_schema_accepts_every_default_of_the_real_subcharts(workspace, chart):
    """Never stricter than the upstream chart: its own defaults (which Helm merges in before it
    validates) must pass our schema; only what we require ourselves may be missing."""
    source = workspace.sources[chart]
    if not source.real:
        pytest.skip("no real subchart here")
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    ours = load_yaml(CHARTS / chart / "values.yaml") or {}
    for key, tgz in source.real.items():
        sub = schema["properties"].get(key)
        assert sub is not None, f"{chart}: values.schema.json has no entry for subchart {key}"
        # The defaults we do not override, as Helm merges them before it validates.
        merged = deep_merge(_package_values(tgz), ours.get(key) or {})
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft7Validator(_without_required(sub)).iter_errors(merged)]
        assert not errors, f"{chart}: {key}: {errors}"


def test_the_old_istio_schema_would_have_been_caught(workspace):
    if "gateway" not in workspace.sources["kalypso-istio"].real:
        pytest.skip("needs the real gateway chart")
    old = {"type": "object", "not": {"anyOf": [{"required": ["_internal_defaults_do_not_set"]}]}}
    defaults = _package_values(workspace.sources["kalypso-istio"].real["gateway"])
    assert list(jsonschema.Draft7Validator(_without_required(old)).iter_errors(defaults))


@pytest.mark.parametrize("bad", [
    "gateway.enabled=false",   # read by nothing: the switch is ingressGateway.enabled
    "gateway.defaults.hub=x",  # refused by the gateway chart too (zzz_profile.yaml)
])
def test_istio_schema_still_refuses_what_would_mislead(workspace, argo_apps, bad):
    out = chartlib.argo_template(workspace.staged["kalypso-istio"], argo_apps["kalypso-istio"], set(),
                                 workspace.dir, set_values=[bad])
    assert out.returncode != 0 and "kalypso-istio:\n- gateway: Must not validate the schema (not)" in out.stderr, out.stderr
