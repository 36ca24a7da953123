"""Argo CD: one server-side apply bootstraps everything; the children are ordered by waves that
really wait (the health check), every dependency the real render shows points at an earlier wave,
and a child whose dependency is missing converges by retry (argosim.py)."""
from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor

import lupa.lua51 as lua51
import pytest

import argosim
import chartlib
import crossrefs
from chartlib import APP_CHARTS, BUNDLE, REPO, load_yaml
from conftest import REPO_URL, render_bundle

ORDER = ["cert-manager", "kalypso-otel", "kalypso-istio", "kalypso-minio",
         {"kalypso-mimir", "kalypso-tempo", "kalypso-loki"},
         {"kalypso-pyroscope", "kalypso-profiler"}, "kalypso-grafana"]
HEALTH_KEY = "resource.customizations.health.argoproj.io_Application"
# A runtime link inside one wave: the consumer must cope with the other not being up yet.
SAME_WAVE_LINKS = {
    # The agent keeps its latest windows and retries the export until the collector answers.
    ("kalypso-profiler", "kalypso-pyroscope"),
}


def _apps(docs):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Application"}


def _wave(app):
    return int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


# --- The bootstrap ---------------------------------------------------------------------------

def test_rendering_without_a_repo_url_fails_loudly():
    out = chartlib.helm_template(BUNDLE, "kalypso", "argocd")
    assert out.returncode != 0 and "repoURL" in out.stderr


def test_bootstrap_is_the_health_check_the_project_and_the_root_application(bundle_bootstrap):
    kinds = sorted(d["kind"] for d in bundle_bootstrap)
    assert kinds == ["AppProject", "Application", "ConfigMap"]
    root = _apps(bundle_bootstrap)["kalypso"]
    src = root["spec"]["source"]
    assert src["repoURL"] == REPO_URL and src["path"] == "argocd/bundle"
    passed = src["helm"]["valuesObject"]
    assert passed["mode"] == "apps" and passed["repoURL"] == REPO_URL
    assert passed["targetRevision"] == src["targetRevision"]
    # Every object names its namespace: the apply needs no -n and cannot land elsewhere.
    assert all(d["metadata"]["namespace"] == "argocd" for d in bundle_bootstrap)


def test_bootstrap_sets_only_the_application_health_key_of_argocd_cm(bundle_bootstrap, bundle_values):
    (cm,) = [d for d in bundle_bootstrap if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["metadata"]["namespace"] == bundle_values["argocdNamespace"]
    # Argo CD's settings manager only sees ConfigMaps with this label (util/settings/settings.go).
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    # One key: a server-side apply then owns that key alone and leaves every other setting.
    assert list(cm["data"]) == [HEALTH_KEY]
    assert cm["data"][HEALTH_KEY] == (BUNDLE / "files/application-health.lua").read_text()


def test_bootstrap_can_leave_argocd_cm_to_whoever_manages_it():
    docs = render_bundle("bootstrap", "applicationHealthCheck=false")
    assert "ConfigMap" not in {d["kind"] for d in docs}


def test_docs_bootstrap_with_one_server_side_apply_and_nothing_patched():
    readme = (REPO / "README.md").read_text().split("## Deploying on Kubernetes", 1)[1].split("\n## ", 1)[0]
    for path, text in ((REPO / "docs/deploy.md", (REPO / "docs/deploy.md").read_text()), (REPO / "README.md", readme)):
        assert "kubectl patch" not in text and "argocd-cm-app-health" not in text, path
        assert "| kubectl apply --server-side --field-manager=kalypso-bootstrap -f -" in text, path
    assert not (REPO / "argocd/argocd-cm-app-health.yaml").exists()


# --- The health check, run as Argo CD runs it (Lua 5.1, the child as `obj`) -------------------

def _health(bootstrap_docs, status: dict | None) -> tuple[str, str]:
    (cm,) = [d for d in bootstrap_docs if d["kind"] == "ConfigMap"]
    lua = lua51.LuaRuntime()
    child = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "x"}}
    if status is not None:
        child["status"] = status
    lua.globals().obj = lua.table_from(child, recursive=True)
    hs = lua.execute(cm["data"][HEALTH_KEY])
    return hs["status"], hs["message"]


@pytest.mark.parametrize("status, expected", [
    (None, "Progressing"),                                                     # just created
    ({"health": {"status": "Missing"}, "sync": {"status": "OutOfSync"}}, "Progressing"),
    ({"health": {"status": "Progressing"}, "sync": {"status": "Synced"}}, "Progressing"),
    # Failed resources do not count in an Application's health: Healthy while its sync fails.
    ({"health": {"status": "Healthy"}, "sync": {"status": "OutOfSync"}}, "Progressing"),
    ({"health": {"status": "Healthy"}, "sync": {"status": "Synced"}}, "Healthy"),
    ({"health": {"status": "Degraded", "message": "CrashLoopBackOff"}, "sync": {"status": "Synced"}}, "Degraded"),
])
def test_a_child_is_healthy_for_the_root_only_once_synced_and_healthy(bundle_bootstrap, status, expected):
    assert _health(bundle_bootstrap, status)[0] == expected


def test_the_health_check_passes_the_childs_message_on(bundle_bootstrap):
    status = {"health": {"status": "Degraded", "message": "Deployment x exceeded its progress deadline"}}
    assert _health(bundle_bootstrap, status) == ("Degraded", "Deployment x exceeded its progress deadline")


# --- The children ----------------------------------------------------------------------------

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


def test_project_allows_every_cluster_scoped_kind_the_real_render_has(bundle_bootstrap, rendered):
    (project,) = [d for d in bundle_bootstrap if d["kind"] == "AppProject"]
    allowed = {(r["group"], r["kind"]) for r in project["spec"]["clusterResourceWhitelist"]}
    needed = {(d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else "", d["kind"])
              for docs in rendered.values() for d in docs if d["kind"] in chartlib.CLUSTER_SCOPED}
    assert needed <= allowed, sorted(needed - allowed)


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


def test_children_sync_themselves_and_retry_until_they_converge(bundle_apps, bundle_bootstrap, bundle_values):
    for name, app in {**_apps(bundle_apps), **_apps(bundle_bootstrap)}.items():
        policy = app["spec"]["syncPolicy"]
        assert policy["automated"] == {"prune": True, "selfHeal": True}, name
        # Argo CD never auto-syncs a revision again once its retries ran out: no limit.
        assert policy["retry"]["limit"] == -1, name
        assert policy["retry"]["backoff"]["factor"] > 1, name
        assert app["spec"]["project"] == bundle_values["project"]
        if name != "kalypso":
            assert "CreateNamespace=true" in policy["syncOptions"], name


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


# --- Order from the real render --------------------------------------------------------------

@pytest.fixture(scope="module")
def cold_render(workspace, argo_apps):
    """Every child rendered with no custom resource kind served at all: what each applies when it
    starts before anything else (the worst case of test_without_the_waves_...)."""
    def render(name):
        result = chartlib.argo_template(workspace.staged[name], argo_apps[name], set(), workspace.dir)
        assert result.returncode == 0, result.stderr
        return name, chartlib.load_all(result.stdout)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(render, [n for n in argo_apps if n in workspace.staged]))


def _kind_providers(workspace, rendered) -> dict[tuple[str, str], str]:
    """(apiVersion, kind) -> the child whose CRDs serve it (a placeholder's known list included)."""
    out = {}
    for name, docs in rendered.items():
        for kind in chartlib.served_kinds(docs):
            out[kind] = name
    for name, source in [*workspace.sources.items(), ("cert-manager", None)]:
        deps = [p.split()[0] for p in source.placeholders] if source else (
            [] if "cert-manager" in workspace.sources else ["cert-manager"])
        for dep in deps:
            for api in chartlib.PLACEHOLDER_APIS.get(dep, []):
                out.setdefault(tuple(api.rsplit("/", 1)), name)
    return out


def _secret_copies(docs) -> list[tuple[str, str]]:
    out = []
    for d in docs:
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) if d["kind"] == "Job" else []:
            for e in c.get("env", []):
                if e["name"] == "KALYPSO_SECRETS_SPEC":
                    out += [(i["fromNamespace"], i["fromName"]) for i in json.loads(e["value"])["copy"]]
    return out


def _secret_generators(rendered, namespaces) -> dict[tuple[str, str], str]:
    out = {}
    for name, docs in rendered.items():
        for d in docs:
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) if d["kind"] == "Job" else []:
                for e in c.get("env", []):
                    if e["name"] == "KALYPSO_SECRETS_SPEC":
                        out.update({(namespaces[name], g["name"]): name for g in json.loads(e["value"])["generate"]})
    return out


def _custom_kinds(docs) -> set[tuple[str, str]]:
    return {(d["apiVersion"], d["kind"]) for d in docs
            if "/" in d["apiVersion"] and "." in d["apiVersion"].split("/")[0]
            and not d["apiVersion"].split("/")[0].endswith("k8s.io")}


def _needs(name, docs, kinds, secrets, namespaces) -> dict[str, str]:
    """{other child: why} that `name`'s sync cannot succeed without."""
    needs = {}
    for kind in _custom_kinds(docs):
        provider = kinds.get(kind)
        assert provider, f"{name} applies {kind}, which no child of the bundle serves"
        if provider != name:
            needs[provider] = f"applies {kind[1]} ({kind[0]})"
    for ref in _secret_copies(docs):
        provider = secrets.get(ref)
        assert provider, f"{name} copies Secret {ref}, which no child generates"
        if provider != name:
            needs[provider] = f"copies Secret {ref[0]}/{ref[1]}"
    return needs


@pytest.fixture(scope="module")
def dependencies(workspace, rendered, namespaces):
    """Every dependency between children that the steady-state render shows: custom resource
    kinds served by another child's CRDs, Secrets another child generates."""
    kinds = _kind_providers(workspace, rendered)
    secrets = _secret_generators(rendered, namespaces)
    return {name: _needs(name, docs, kinds, secrets, namespaces) for name, docs in rendered.items()}


def test_the_real_render_shows_the_dependencies_the_order_is_for(dependencies):
    # Without these the ordering tests below would pass on an empty graph.
    assert "cert-manager" in dependencies["kalypso-otel"], dependencies["kalypso-otel"]
    assert "kalypso-istio" in dependencies["kalypso-grafana"], dependencies["kalypso-grafana"]
    for consumer in ("kalypso-mimir", "kalypso-tempo", "kalypso-loki", "kalypso-pyroscope"):
        assert "kalypso-minio" in dependencies[consumer], consumer


def test_every_dependency_is_in_an_earlier_wave(dependencies, argo_apps):
    wrong = [f"{n} (wave {argo_apps[n].wave}) {why} of {d} (wave {argo_apps[d].wave})"
             for n, needs in dependencies.items() for d, why in needs.items()
             if argo_apps[d].wave >= argo_apps[n].wave]
    assert not wrong, "\n".join(wrong)


def test_every_service_a_child_calls_is_up_before_it_or_tolerates_it(rendered, chart_values, bundle_values,
                                                                       namespaces, argo_apps):
    owner = {}
    for name, docs in rendered.items():
        for key in crossrefs.rendered_services({name: docs}, namespaces):
            owner[key] = name
    for name, values in chart_values.items():  # placeholders: from the documented table
        for key in crossrefs.upstream_services({name: values}, namespaces):
            owner.setdefault(key, name)
    refs = [(r.source, r) for r in crossrefs.refs_in_rendered(rendered)]
    refs += [(r.source, r) for r in crossrefs.refs_in_values(chart_values, bundle_values)]
    later, links = [], set()
    for source, ref in refs:
        caller = next((n for n in argo_apps if f" {n} " in f" {source} " or f"charts/{n}/" in source), None)
        callee = owner.get((ref.namespace, ref.service))
        if caller is None or callee is None or callee == caller:
            continue
        links.add((caller, callee))
        if argo_apps[callee].wave > argo_apps[caller].wave or (
                argo_apps[callee].wave == argo_apps[caller].wave and (caller, callee) not in SAME_WAVE_LINKS):
            later.append(f"{source}: {ref.text} is {callee}, wave {argo_apps[callee].wave} >= {argo_apps[caller].wave}")
    assert ("kalypso-grafana", "kalypso-pyroscope") in links and ("kalypso-loki", "kalypso-minio") in links, links
    assert not later, "\n".join(later)


def _children(argo_apps, needs) -> dict[str, argosim.Child]:
    return {n: argosim.Child(n, a.wave, argosim.Retry.from_application(a.doc), set(needs.get(n, {})))
            for n, a in argo_apps.items()}


@pytest.fixture(scope="module")
def cold_needs(workspace, rendered, namespaces, cold_render):
    """What each child's *first* sync fails without, when nothing else is installed yet."""
    kinds = _kind_providers(workspace, rendered)
    secrets = _secret_generators(rendered, namespaces)
    return {name: _needs(name, docs, kinds, secrets, namespaces) for name, docs in cold_render.items()}


def test_with_the_waves_no_child_needs_a_retry(argo_apps, cold_needs, dependencies):
    needs = {n: {**dependencies.get(n, {}), **cold_needs.get(n, {})} for n in argo_apps}
    outcome = argosim.simulate(_children(argo_apps, needs), ordered=True)
    assert not outcome.stuck, outcome.stuck
    assert all(a == 1 for a in outcome.attempts.values()), outcome.attempts


def test_without_the_waves_every_child_converges_by_retry(argo_apps, cold_needs):
    # Worst case: every child exists at once; each takes 5 minutes to come up once synced.
    outcome = argosim.simulate(_children(argo_apps, cold_needs), ordered=False, ready_after=300)
    assert not outcome.stuck, outcome.stuck
    retried = {n for n, a in outcome.attempts.items() if a > 1}
    # The operator's Issuer/Certificate and the consumers' S3 keys really wait for others.
    assert {"kalypso-otel", "kalypso-loki"} <= retried, outcome.attempts


def test_a_retry_limit_that_runs_out_strands_a_child(argo_apps, cold_needs):
    apps = copy.deepcopy(argo_apps)
    for app in apps.values():
        app.doc["spec"]["syncPolicy"]["retry"]["limit"] = 3
    outcome = argosim.simulate(_children(apps, cold_needs), ordered=False, ready_after=600)
    assert outcome.stuck, "the model must be able to fail"


def _in_app_wave(doc) -> int:
    return int((doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_istio_gateway_pods_come_after_istiod_answers(rendered, workspace):
    """Inside kalypso-istio: a gateway pod created before istiod's injector answers keeps
    `image: auto` and never starts; a Gateway applied before the validating webhook is not checked."""
    if not workspace.sources["kalypso-istio"].real:
        pytest.skip("needs the real istio charts")
    docs = rendered["kalypso-istio"]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    gateway = [d for d in deployments.values()
               if d["spec"]["template"]["metadata"].get("labels", {}).get("sidecar.istio.io/inject") == "true"]
    assert len(gateway) == 1, sorted(deployments)
    istiod = deployments["istiod"]
    webhooks = [d for d in docs if d["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")]
    assert webhooks
    first = max([_in_app_wave(istiod)] + [_in_app_wave(w) for w in webhooks])
    assert _in_app_wave(gateway[0]) > first
    (gw_resource,) = [d for d in docs if d["kind"] == "Gateway"]
    assert _in_app_wave(gw_resource) > first


def test_every_object_lands_in_a_namespace_the_project_allows(bundle_bootstrap, rendered):
    (project,) = [d for d in bundle_bootstrap if d["kind"] == "AppProject"]
    allowed = {d["namespace"] for d in project["spec"]["destinations"]}
    outside = [f"{app} {d['kind']}/{d['metadata']['name']}: {d['metadata']['namespace']}"
               for app, docs in rendered.items() for d in docs
               if d["kind"] not in chartlib.CLUSTER_SCOPED and d["metadata"]["namespace"] not in allowed]
    assert not outside, "\n".join(outside)


def test_objects_too_big_for_client_side_apply_are_applied_server_side(rendered, argo_apps):
    """kubectl's last-applied annotation is limited to 256 KiB: larger objects (CRDs) fail a
    client-side apply, so their Application must sync with ServerSideApply=true."""
    big = [(app, d["kind"], d["metadata"]["name"]) for app, docs in rendered.items() for d in docs
           if len(json.dumps(d, separators=(",", ":"))) > 256 * 1024]
    wrong = [b for b in big if "ServerSideApply=true" not in argo_apps[b[0]].sync_options]
    assert not wrong, wrong
