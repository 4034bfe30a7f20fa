#!/usr/bin/env bash
# Installs what building, running and testing kubepbx needs on Debian/Ubuntu, and nothing
# that is already there. Idempotent; safe to run on every `make` invocation.
#   scripts/install-deps.sh run    what `make up` needs (a Rust toolchain; protoc, which the
#                                  etcd client's build needs; Node.js and npm, which build the
#                                  web phone and admin UI)
#   scripts/install-deps.sh test   what `make test` needs (etcd, SIP test clients, Chromium, …)
#   scripts/install-deps.sh bench  what `make bench` needs (adds kamailio as the peer)
set -euo pipefail
mode=${1:-run}

need_cmd() { command -v "$1" >/dev/null 2>&1; }

if ! need_cmd cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "cargo is in $HOME/.cargo/bin but not on PATH: run 'source \$HOME/.cargo/env' and retry" >&2
  else
    echo "kubepbx needs a Rust toolchain (1.95 or newer): see https://rustup.rs" >&2
  fi
  exit 1
fi

# command -> Debian package. Every mode builds the binary, and the etcd client's build script
# compiles etcd's protobuf definitions with protoc. Tests and benchmarks run a real etcd.
declare -A packages=([protoc]=protobuf-compiler [node]=nodejs [npm]=npm)
case "$mode" in
  run) ;;
  test) packages+=([etcd]=etcd-server [sipp]=sip-tester [baresip]=baresip [chromium]=chromium) ;;
  bench) packages+=([etcd]=etcd-server [sipp]=sip-tester [kamailio]=kamailio [pidstat]=sysstat) ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

missing=()
for cmd in "${!packages[@]}"; do
  need_cmd "$cmd" || missing+=("${packages[$cmd]}")
done
# Tests also drive pjsua2 (pjsip, the stack of MicroSIP) from Python.
need_pjsua2=false
if [ "$mode" = test ] && ! python3 -c 'import pjsua2' >/dev/null 2>&1; then
  need_pjsua2=true
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi

# The chart tests render and validate charts/kubepbx with the Helm SDK and the Kubernetes
# schemas (PyPI), in their own virtualenv so nothing system-wide changes.
chart_venv="$HOME/.cache/kubepbx/chart-venv"
need_chart_venv=false
if [ "$mode" = test ] && ! "$chart_venv/bin/python" -c 'import helm_python, kubernetes_validate' >/dev/null 2>&1; then
  need_chart_venv=true
  python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
fi

install_chart_venv() {
  $need_chart_venv || return 0
  echo "installing: chart test tools (PyPI) into $chart_venv"
  python3 -m venv "$chart_venv"
  "$chart_venv/bin/python" -m pip install -q -r "$(dirname "$0")/../tests/chart/requirements.txt"
}

install_pjsua2() {
  $need_pjsua2 || return 0
  echo "installing: pjsua2-python (PyPI)"
  # Debian's python refuses system-wide pip installs unless told otherwise.
  python3 -m pip install -q pjsua2-python 2>/dev/null ||
    python3 -m pip install -q --break-system-packages pjsua2-python
}

if [ ${#missing[@]} -eq 0 ]; then
  install_pjsua2
  install_chart_venv
  exit 0
fi

if ! need_cmd apt-get; then
  echo "missing: ${missing[*]} — install them with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  need_cmd sudo || { echo "missing: ${missing[*]} — run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_pjsua2
install_chart_venv
