"""Linters on the files as written: yamllint, hadolint, checkov (Dockerfile), and the Dockerfile's build recipe."""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from chartlib import REPO, run

DOCKERFILE = REPO / "Dockerfile"


def test_yamllint_passes_on_charts_argocd_and_suite():
    targets = [str(REPO / "charts"), str(REPO / "argocd"), str(REPO / "tests" / "charts"),
               str(REPO / ".github" / "workflows")]
    result = run(["yamllint", "--strict", "-c", str(REPO / "tests/charts/yamllint.yaml"), *targets])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_passes_on_dockerfile():
    result = run(["hadolint", "--failure-threshold", "info", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_on_dockerfile():
    # Skips are inline in the Dockerfile (#checkov:skip=...), each with its reason.
    result = run(["checkov", "--skip-download", "--quiet", "--compact", "--framework", "dockerfile",
                  "-f", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_checkov_skip_in_dockerfile_has_a_reason():
    skips = re.findall(r"#checkov:skip=([A-Z0-9_]+)(:?)(.*)", DOCKERFILE.read_text())
    assert skips, "expected the documented skips (root user, HEALTHCHECK)"
    for check, colon, reason in skips:
        assert colon and len(reason.strip()) > 20, f"{check} is skipped without a reason"


def test_dockerfile_cross_compiles_with_the_projects_own_commands():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(.+)$", text, flags=re.M)
    assert len(stages) == 2, stages
    assert stages[0].startswith("--platform=$BUILDPLATFORM "), "builder must run natively and cross-compile"
    assert "--platform" not in stages[1], "runtime stage takes the target platform"
    for needed in ("ARG TARGETARCH", "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu",
                   "cargo xtask setup --target", "cargo xtask build-ebpf",
                   "cargo xtask build --release --target",
                   'ENTRYPOINT ["/usr/local/bin/profiler-agent"]',
                   'RUN ["/usr/local/bin/profiler-agent", "--version"]',
                   "org.opencontainers.image.title"):
        assert needed in text, f"Dockerfile lacks {needed!r}"
    # No architecture is hard-coded outside the TARGETARCH mapping.
    assert not re.search(r"^FROM .*(amd64|arm64|aarch64)", text, flags=re.M)


def test_dockerignore_keeps_build_output_and_git_out_of_the_context():
    lines = (REPO / ".dockerignore").read_text().split()
    for entry in ("target/", ".git/"):
        assert entry in lines
    # The workspace members that the build needs must stay in the context.
    for member in ("profiler-agent", "profiler-ebpf", "profiler-common", "xtask", "Cargo.toml"):
        assert not any(line.rstrip("/") == member for line in lines), member


WORKFLOW = REPO / ".github/workflows/release-image.yml"


def test_release_workflow_passes_the_github_workflow_schema():
    node_bin = Path(os.environ["NODE_PATH"]).parent / "node_modules/.bin/action-validator"
    result = run([str(node_bin), str(WORKFLOW)])
    assert result.returncode == 0, result.stdout + result.stderr
    lint = run(["yamllint", "--strict", "-c", str(REPO / "tests/charts/yamllint.yaml"), str(WORKFLOW)])
    assert lint.returncode == 0, lint.stdout


def test_release_workflow_publishes_both_architectures_from_this_dockerfile():
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf[True]["push"]["tags"], "runs on version tags"  # YAML 1.1 reads `on` as True
    steps = wf["jobs"]["image"]["steps"]
    build = [s for s in steps if s.get("uses", "").startswith("docker/build-push-action")][0]["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["file"] == "Dockerfile" and build["push"] is True
    assert any("appVersion" in s.get("run", "") for s in steps), "the chart's default image must be this tag"
