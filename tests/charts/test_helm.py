"""helm lint --strict, Chart.lock consistency, strict Kubernetes schemas and checkov on rendered output."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import chartlib
from chartlib import APP_CHARTS, BUNDLE, CHARTS, KUBE_VERSION, REPO, load_yaml, run

LOCKED_CHARTS = [c for c in APP_CHARTS if load_yaml(CHARTS / c / "Chart.yaml").get("dependencies")]
CR_GROUPS = ("argoproj.io", "cert-manager.io", "networking.istio.io", "security.istio.io",
             "monitoring.coreos.com")


@pytest.mark.parametrize("chart", APP_CHARTS)
def test_helm_lint_strict(workspace, bundle_values, chart):
    ns = bundle_values["apps"][chart]["namespace"]
    result = run(["helm", "lint", "--strict", "--namespace", ns, str(workspace.staged[chart])])
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_lint_strict_library_and_bundle():
    lib = run(["helm", "lint", "--strict", str(CHARTS / "kalypso-lib")])
    assert lib.returncode == 0, lib.stdout + lib.stderr
    bundle = run(["helm", "lint", "--strict", str(BUNDLE), "--set", "repoURL=https://example.invalid/k.git"])
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr


# --- Chart.lock ------------------------------------------------------------------------------

def _helm_dependency_build_verdict(chart_dir: Path) -> str:
    """Helm checks the lock digest before it needs any repository: with no repositories
    configured, a consistent lock fails later ("no repository definition"), a stale one at once."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / chart_dir.name
        shutil.copytree(chart_dir, staged)
        if (staged / "Chart.lock").exists() is False:
            return "no lock"
        for dep in load_yaml(staged / "Chart.yaml").get("dependencies", []):
            if dep["repository"].startswith("file://"):
                shutil.copytree((chart_dir / dep["repository"][7:]).resolve(),
                                Path(tmp) / Path(dep["repository"][7:]).name)
        env = dict(os.environ, HELM_CACHE_HOME=f"{tmp}/c", HELM_CONFIG_HOME=f"{tmp}/cfg",
                   HELM_DATA_HOME=f"{tmp}/d")
        result = run(["helm", "dependency", "build", str(staged)], env=env, timeout=120)
        return result.stderr + result.stdout


@pytest.mark.parametrize("chart", LOCKED_CHARTS)
def test_chart_lock_matches_chart_yaml(chart):
    meta = load_yaml(CHARTS / chart / "Chart.yaml")
    lock = load_yaml(CHARTS / chart / "Chart.lock")
    assert lock["dependencies"] == chartlib.expected_lock_dependencies(meta), \
        "Chart.lock pins other versions or repositories than Chart.yaml"
    assert lock["digest"] == chartlib.lock_digest(meta["dependencies"], lock["dependencies"])
    verdict = _helm_dependency_build_verdict(CHARTS / chart)
    assert "out of sync" not in verdict, verdict


def test_stale_chart_lock_is_detected_by_both_checks(tmp_path):
    chart = tmp_path / "kalypso-minio"
    shutil.copytree(CHARTS / "kalypso-minio", chart)
    shutil.copytree(CHARTS / "kalypso-lib", tmp_path / "kalypso-lib")
    meta = load_yaml(chart / "Chart.yaml")
    meta["dependencies"][0]["version"] = "5.3.0"  # bumped in Chart.yaml, lock not regenerated
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    lock = load_yaml(chart / "Chart.lock")
    assert lock["digest"] != chartlib.lock_digest(meta["dependencies"], lock["dependencies"])
    assert "out of sync" in _helm_dependency_build_verdict(chart)


def test_every_dependency_version_is_pinned_exactly():
    for chart in LOCKED_CHARTS:
        for dep in load_yaml(CHARTS / chart / "Chart.yaml")["dependencies"]:
            assert not any(c in str(dep["version"]) for c in "^~<>=*xX| "), f"{chart}: {dep}"


# --- Strict schemas --------------------------------------------------------------------------

def _all_rendered(rendered, bundle_bootstrap, bundle_apps):
    docs = [(chart, d) for chart, objs in rendered.items() for d in objs]
    docs += [("argocd/bundle", d) for d in bundle_bootstrap + bundle_apps]
    return docs


def test_rendered_builtin_kinds_pass_strict_kubernetes_schemas(rendered, bundle_bootstrap, bundle_apps):
    failures, checked = [], 0
    for chart, doc in _all_rendered(rendered, bundle_bootstrap, bundle_apps):
        if doc["apiVersion"].split("/")[0] in CR_GROUPS:
            continue
        checked += 1
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            failures.append(f"{chart} {doc['kind']}/{doc['metadata']['name']}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{chart} {doc['kind']} ({doc['apiVersion']}): no schema and no CR model")
    assert checked > 20
    assert not failures, "\n".join(failures)


def _validate_crs(docs: list[dict]) -> list[dict]:
    result = run(["node", str(REPO / "tests/charts/validate_crs.js")], input=json.dumps(docs))
    assert result.returncode in (0, 2), result.stderr
    return json.loads(result.stdout)


def _optional_renders(workspace) -> list[dict]:
    """Objects that only non-default values render: TLS on the gateway, the profiler's PodMonitor."""
    docs = []
    for chart, sets in (("kalypso-istio", ["ingressGateway.tls.enabled=true"]),
                        ("kalypso-profiler", ["podMonitor.enabled=true"])):
        out = chartlib.helm_template(workspace.staged[chart], chart, "x", set_values=sets)
        assert out.returncode == 0, out.stderr
        docs += chartlib.load_all(out.stdout)
    return docs


def test_custom_resources_pass_their_crd_schemas(workspace, rendered, bundle_bootstrap, bundle_apps):
    docs = [d for _, d in _all_rendered(rendered, bundle_bootstrap, bundle_apps)]
    docs += _optional_renders(workspace)
    crs = [d for d in docs if d["apiVersion"].split("/")[0] in CR_GROUPS]
    kinds = {d["kind"] for d in crs}
    # Every family the bundle renders is covered: Argo CD, Istio, cert-manager, prometheus-operator.
    assert {"AppProject", "Application", "Gateway", "VirtualService", "Certificate", "Issuer",
            "PodMonitor"} <= kinds, kinds
    bad = [r for r in _validate_crs(crs) if r["error"]]
    assert not bad, json.dumps(bad, indent=1)


def test_cr_validator_rejects_an_invalid_application():
    broken = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
              "metadata": {"name": "x"}, "spec": {"project": 7, "destination": {}}}
    assert _validate_crs([broken])[0]["error"]


def test_cr_validator_refuses_unknown_kinds():
    unknown = {"apiVersion": "example.dev/v1", "kind": "Thing", "metadata": {"name": "x"}}
    result = run(["node", str(REPO / "tests/charts/validate_crs.js")], input=json.dumps([unknown]))
    assert result.returncode == 2


# --- checkov ---------------------------------------------------------------------------------

def test_checkov_passes_on_rendered_manifests(workspace, rendered, bundle_bootstrap, bundle_apps, tmp_path):
    for chart, objs in rendered.items():
        (tmp_path / f"{chart}.yaml").write_text(yaml.safe_dump_all(objs))
    (tmp_path / "optional.yaml").write_text(yaml.safe_dump_all(_optional_renders(workspace)))
    result = run(["checkov", "--skip-download", "--quiet", "--compact", "--framework", "kubernetes",
                  "--config-file", str(REPO / "tests/charts/checkov.yaml"), "-d", str(tmp_path)])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
