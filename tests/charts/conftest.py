"""Shared fixtures: every chart is staged (placeholder subcharts) and rendered once per session."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

import chartlib
from chartlib import APP_CHARTS, BUNDLE, CHARTS, REPO, load_all, load_yaml

REPO_URL = "https://example.invalid/kalypso.git"


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session")
def workspace():
    ws = chartlib.Workspace()
    yield ws
    ws.close()


@pytest.fixture(scope="session")
def bundle_values() -> dict:
    return chartlib.bundle_values()


@pytest.fixture(scope="session")
def chart_values(bundle_values) -> dict[str, dict]:
    """Each chart's values as the bundle deploys it: values.yaml + the bundle's per-app values."""
    return {name: deep_merge(load_yaml(CHARTS / name / "values.yaml") or {},
                             bundle_values["apps"][name].get("values") or {})
            for name in APP_CHARTS}


@pytest.fixture(scope="session")
def rendered(workspace, bundle_values) -> dict[str, list[dict]]:
    """`helm template` of every chart as the bundle deploys it (release = Application name)."""
    out = {}
    for name in APP_CHARTS:
        result = chartlib.helm_template(workspace.staged[name], name,
                                        bundle_values["apps"][name]["namespace"])
        assert result.returncode == 0, f"helm template {name} failed:\n{result.stderr}"
        out[name] = load_all(result.stdout)
    return out


def render_bundle(mode: str, *extra: str) -> list[dict]:
    result = chartlib.helm_template(BUNDLE, "kalypso", "argocd",
                                    set_values=[f"repoURL={REPO_URL}", f"mode={mode}", *extra])
    assert result.returncode == 0, f"helm template argocd/bundle ({mode}) failed:\n{result.stderr}"
    return load_all(result.stdout)


@pytest.fixture(scope="session")
def bundle_bootstrap() -> list[dict]:
    return render_bundle("bootstrap")


@pytest.fixture(scope="session")
def bundle_apps() -> list[dict]:
    return render_bundle("apps")


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
