"""helm lint --strict, Chart.lock consistency, strict Kubernetes schemas, CRD schemas and checkov,
all on the render that Argo CD produces with the real subcharts (conftest.py)."""
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
import crdschema
from chartlib import APP_CHARTS, BUNDLE, CHARTS, KUBE_VERSION, REPO, load_yaml, run

LOCKED_CHARTS = [c for c in APP_CHARTS if load_yaml(CHARTS / c / "Chart.yaml").get("dependencies")]
CR_GROUPS = ("argoproj.io", "cert-manager.io", "acme.cert-manager.io", "networking.istio.io",
             "security.istio.io", "telemetry.istio.io", "extensions.istio.io",
             "monitoring.coreos.com", "opentelemetry.io")
APPLICATIONS = [*APP_CHARTS, "cert-manager"]


@pytest.mark.parametrize("app", APPLICATIONS)
def test_helm_lint_strict_with_the_applications_values(workspace, argo_apps, app, tmp_path):
    if app not in workspace.staged:
        pytest.skip(f"{app}: its chart is not available here")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(argo_apps[app].values))
    result = run(["helm", "lint", "--strict", "--namespace", argo_apps[app].namespace,
                  "--kube-version", KUBE_VERSION, "-f", str(values), str(workspace.staged[app])])
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

def _all_rendered(bundle_render, bundle_bootstrap, bundle_apps):
    """Both passes of every Application, and the bundle's own objects."""
    docs = [(f"{app} (first sync)", d) for app, objs in bundle_render.first.items() for d in objs]
    docs += [(app, d) for app, objs in bundle_render.steady.items() for d in objs]
    docs += [("argocd/bundle", d) for d in bundle_bootstrap + bundle_apps]
    return docs


def test_rendered_builtin_kinds_pass_strict_kubernetes_schemas(rendered, bundle_render, bundle_bootstrap, bundle_apps):
    failures, checked, seen = [], 0, set()
    for chart, doc in _all_rendered(bundle_render, bundle_bootstrap, bundle_apps):
        if doc["apiVersion"].split("/")[0] in CR_GROUPS:
            continue
        # Most objects are the same in both passes: validate each distinct one once.
        key = json.dumps(doc, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
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


def _optional_renders(workspace, argo_apps, steady_apis, ours_only=False) -> list[dict]:
    """Objects that only non-default values render: TLS on the gateway, the profiler's PodMonitor."""
    docs = []
    for app, sets in (("kalypso-istio", ["ingressGateway.tls.enabled=true"]),
                      ("kalypso-profiler", ["podMonitor.enabled=true"])):
        out = chartlib.argo_template(workspace.staged[app], argo_apps[app], steady_apis, workspace.dir,
                                     set_values=sets)
        assert out.returncode == 0, out.stderr
        docs += [d for src, d in chartlib.load_all_with_sources(out.stdout)
                 if not (ours_only and chartlib.from_subchart(src))]
    return docs


def _custom_resources(bundle_render, bundle_bootstrap, bundle_apps, extra=()):
    docs = [d for _, d in _all_rendered(bundle_render, bundle_bootstrap, bundle_apps)] + list(extra)
    return [d for d in docs if d["apiVersion"].split("/")[0] in CR_GROUPS]


def test_custom_resources_pass_their_published_models(workspace, argo_apps, steady_apis, rendered,
                                                      bundle_render, bundle_bootstrap, bundle_apps):
    crs = _custom_resources(bundle_render, bundle_bootstrap, bundle_apps,
                            _optional_renders(workspace, argo_apps, steady_apis))
    kinds = {d["kind"] for d in crs}
    # Every family the bundle renders is covered: Argo CD, Istio, cert-manager, prometheus-operator.
    assert {"AppProject", "Application", "Gateway", "VirtualService", "Certificate", "Issuer",
            "PodMonitor"} <= kinds, kinds
    bad = [r for r in _validate_crs(crs) if r["error"]]
    assert not bad, json.dumps(bad, indent=1)


@pytest.fixture(scope="module")
def real_crd_schemas(rendered):
    return crdschema.schemas([d for docs in rendered.values() for d in docs
                              if d["kind"] == "CustomResourceDefinition"])


def test_custom_resources_pass_the_schemas_of_the_crds_the_bundle_installs(
        workspace, argo_apps, steady_apis, rendered, real_crd_schemas, bundle_render, bundle_bootstrap, bundle_apps):
    if not real_crd_schemas:
        pytest.skip("no real CRDs rendered here (no upstream subcharts)")
    crs = _custom_resources(bundle_render, bundle_bootstrap, bundle_apps,
                            _optional_renders(workspace, argo_apps, steady_apis))
    checked, failures = set(), []
    for cr in crs:
        schema = real_crd_schemas.get((cr["apiVersion"], cr["kind"]))
        if schema is None:
            continue  # Argo CD and prometheus-operator kinds: their CRDs are not part of the bundle
        checked.add(cr["kind"])
        failures += [f"{cr['kind']}/{cr['metadata']['name']}: {e}" for e in crdschema.errors(cr, schema)]
    assert {"Gateway", "VirtualService", "Certificate", "Issuer"} <= checked, checked
    assert not failures, "\n".join(failures)


def test_crd_schema_check_rejects_an_unknown_field(real_crd_schemas):
    if not real_crd_schemas:
        pytest.skip("no real CRDs rendered here (no upstream subcharts)")
    gateway = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "x"},
               "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80}, "hostz": []}]}}
    assert crdschema.errors(gateway, real_crd_schemas[("networking.istio.io/v1", "Gateway")])


def test_cr_validator_rejects_an_invalid_application():
    broken = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
              "metadata": {"name": "x"}, "spec": {"project": 7, "destination": {}}}
    assert _validate_crs([broken])[0]["error"]


def test_cr_validator_refuses_unknown_kinds():
    unknown = {"apiVersion": "example.dev/v1", "kind": "Thing", "metadata": {"name": "x"}}
    result = run(["node", str(REPO / "tests/charts/validate_crs.js")], input=json.dumps([unknown]))
    assert result.returncode == 2


# --- checkov ---------------------------------------------------------------------------------

# On objects an upstream subchart renders, only these checks are enforced: the ones the bundle can
# and must get right through values (requests, so that scheduling on a small node is predictable;
# no host namespaces, privileged containers, docker socket or SYS_ADMIN; nothing in the default
# namespace; nobody reading every Secret of the cluster). The rest (limits, UIDs, seccomp, probes
# of upstream pods) are the upstream charts' own defaults, which the bundle does not rewrite.
UPSTREAM_ENFORCED = {"CKV_K8S_10", "CKV_K8S_12", "CKV_K8S_16", "CKV_K8S_17", "CKV_K8S_18",
                     "CKV_K8S_19", "CKV_K8S_21", "CKV_K8S_27", "CKV_K8S_39", "CKV2_K8S_5"}


@pytest.fixture(scope="module")
def checkov_findings(workspace, argo_apps, steady_apis, rendered, bundle_render, tmp_path_factory):
    """checkov on every rendered object, ours and upstream apart: [(ours, check, resource)]."""
    root = tmp_path_factory.mktemp("checkov")
    for sub in ("ours", "upstream"):
        (root / sub).mkdir()
    for app, objs in rendered.items():
        objs = [d for d in objs if d["kind"] != "CustomResourceDefinition"]
        ours = bundle_render.ours(objs)
        (root / "ours" / f"{app}.yaml").write_text(yaml.safe_dump_all(ours))
        (root / "upstream" / f"{app}.yaml").write_text(yaml.safe_dump_all([d for d in objs if d not in ours]))
    (root / "ours" / "optional.yaml").write_text(
        yaml.safe_dump_all(_optional_renders(workspace, argo_apps, steady_apis, ours_only=True)))
    result = run(["checkov", "--skip-download", "--quiet", "--compact", "--framework", "kubernetes",
                  "--config-file", str(REPO / "tests/charts/checkov.yaml"), "-o", "json", "-d", str(root)])
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return [(f["file_path"].lstrip("/").startswith("ours/"), f["check_id"],
             f"{f['file_path']} {f['resource']}: {f['check_name']}")
            for r in reports for f in r["results"]["failed_checks"]]


def test_checkov_passes_on_the_objects_our_templates_render(checkov_findings):
    ours = [text for is_ours, _, text in checkov_findings if is_ours]
    assert not ours, "\n".join(ours)


def test_checkov_enforced_checks_pass_on_upstream_objects(checkov_findings):
    upstream = [f"{check} {text}" for is_ours, check, text in checkov_findings
                if not is_ours and check in UPSTREAM_ENFORCED]
    assert not upstream, "\n".join(upstream)
