"""Argo CD: scoped AppProject, a root Application, and children that really are ordered."""
from __future__ import annotations

import pytest

import chartlib
from chartlib import APP_CHARTS, BUNDLE, REPO, load_yaml
from conftest import REPO_URL, render_bundle

ORDER = ["cert-manager", "kalypso-otel", "kalypso-istio", "kalypso-minio",
         {"kalypso-mimir", "kalypso-tempo", "kalypso-loki"},
         {"kalypso-pyroscope", "kalypso-profiler"}, "kalypso-grafana"]


def _apps(docs):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Application"}


def _wave(app):
    return int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


def test_rendering_without_a_repo_url_fails_loudly():
    out = chartlib.helm_template(BUNDLE, "kalypso", "argocd")
    assert out.returncode != 0 and "repoURL" in out.stderr


def test_bootstrap_is_the_project_and_the_root_application(bundle_bootstrap):
    kinds = sorted(d["kind"] for d in bundle_bootstrap)
    assert kinds == ["AppProject", "Application"]
    root = _apps(bundle_bootstrap)["kalypso"]
    src = root["spec"]["source"]
    assert src["repoURL"] == REPO_URL and src["path"] == "argocd/bundle"
    passed = src["helm"]["valuesObject"]
    assert passed["mode"] == "apps" and passed["repoURL"] == REPO_URL
    assert passed["targetRevision"] == src["targetRevision"]


def test_project_is_scoped_to_the_bundle(bundle_bootstrap, bundle_values):
    (project,) = [d for d in bundle_bootstrap if d["kind"] == "AppProject"]
    spec = project["spec"]
    assert "*" not in spec["sourceRepos"] and set(spec["sourceRepos"]) == {REPO_URL, bundle_values["certManager"]["repoURL"]}
    namespaces = {d["namespace"] for d in spec["destinations"]}
    assert "*" not in namespaces
    expected = {a["namespace"] for a in bundle_values["apps"].values()}
    expected |= {bundle_values["certManager"]["namespace"], bundle_values["argocdNamespace"]}
    assert namespaces == expected
    whitelist = {(r["group"], r["kind"]) for r in spec["clusterResourceWhitelist"]}
    assert ("*", "*") not in whitelist
    for needed in [("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace"),
                   ("rbac.authorization.k8s.io", "ClusterRole"),
                   ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")]:
        assert needed in whitelist


def test_one_application_per_chart_in_the_documented_order(bundle_apps):
    apps = _apps(bundle_apps)
    assert set(apps) == set(APP_CHARTS) | {"cert-manager"}
    waves = []
    for step in ORDER:
        names = step if isinstance(step, set) else {step}
        step_waves = {_wave(apps[n]) for n in names}
        assert len(step_waves) == 1, f"{names} should share a wave"
        waves.append(step_waves.pop())
    assert waves == sorted(waves) and len(set(waves)) == len(waves), waves


def test_children_sync_themselves_and_converge(bundle_apps, bundle_values):
    for name, app in _apps(bundle_apps).items():
        policy = app["spec"]["syncPolicy"]
        assert policy["automated"] == {"prune": True, "selfHeal": True}, name
        assert "CreateNamespace=true" in policy["syncOptions"], name
        assert policy["retry"]["limit"] > 0 and policy["retry"]["backoff"]["factor"] > 1, name
        assert app["spec"]["project"] == bundle_values["project"]


def test_children_point_at_the_repo_and_at_real_charts(bundle_apps, bundle_values):
    for name, app in _apps(bundle_apps).items():
        src = app["spec"]["source"]
        if name == "cert-manager":
            assert src["chart"] == "cert-manager" and src["helm"]["valuesObject"]["crds"]["enabled"] is True
            continue
        assert src["repoURL"] == REPO_URL and src["targetRevision"] == bundle_values["targetRevision"]
        assert (REPO / src["path"] / "Chart.yaml").exists(), src["path"]
        assert src["helm"]["releaseName"] == name
        assert app["spec"]["destination"]["namespace"] == bundle_values["apps"][name]["namespace"]


def test_crd_heavy_apps_use_server_side_apply_and_ignore_injected_ca_bundles(bundle_apps):
    apps = _apps(bundle_apps)
    for name in ("cert-manager", "kalypso-otel", "kalypso-istio"):
        spec = apps[name]["spec"]
        assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"], name
        assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"], name
        paths = [p for d in spec["ignoreDifferences"] for p in d.get("jqPathExpressions", [])]
        assert ".webhooks[]?.clientConfig.caBundle" in paths, name
    crd = [d for d in apps["kalypso-otel"]["spec"]["ignoreDifferences"] if d["kind"] == "CustomResourceDefinition"]
    assert crd and "/spec/conversion/webhook/clientConfig/caBundle" in crd[0]["jsonPointers"]
    assert "SkipDryRunOnMissingResource=true" in apps["kalypso-otel"]["spec"]["syncPolicy"]["syncOptions"]


def test_profiler_namespace_allows_its_pod_security(bundle_apps):
    labels = _apps(bundle_apps)["kalypso-profiler"]["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_repo_url_and_revision_are_set_in_one_place(bundle_values):
    # Only argocd/bundle/values.yaml holds them, empty: the user passes them once.
    assert bundle_values["repoURL"] == ""
    for path in [*REPO.glob("argocd/**/*.yaml"), *REPO.glob("charts/*/values.yaml")]:
        if path != BUNDLE / "values.yaml":
            assert "repoURL:" not in path.read_text() or "templates" in str(path), path
    docs = (REPO / "docs/deploy.md").read_text()
    assert "--set repoURL=" in docs and "argocd/bundle/values.yaml" in docs


def test_per_app_values_reach_the_child(bundle_values):
    docs = render_bundle("apps", "apps.kalypso-grafana.values.adminUser=root")
    assert _apps(docs)["kalypso-grafana"]["spec"]["source"]["helm"]["valuesObject"] == {"adminUser": "root"}


def test_application_health_check_is_shipped_for_wave_ordering():
    patch = load_yaml(REPO / "argocd/argocd-cm-app-health.yaml")
    lua = patch["data"]["resource.customizations.health.argoproj.io_Application"]
    assert "obj.status.health.status" in lua
