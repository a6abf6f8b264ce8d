#!/usr/bin/env bash
# Runs every test: unit, component, integration (real etcd) and end-to-end (real binaries,
# real kubectl 1.27-1.33, the official Python client). Installs missing Debian packages when run
# as root; otherwise says exactly what is missing. Each test starts and removes its own etcd and
# apiserver on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/prereqs.sh

need_command cargo "install Rust with rustup: https://rustup.rs"
need_packages "${BUILD_PACKAGES[@]}" "${RUN_PACKAGES[@]}" "${NODE_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
python3 -m pip --version >/dev/null 2>&1 || need_packages python3-pip
need_command kubectl "kubectl 1.27 or newer; there is no Debian 12 package: see https://kubernetes.io/docs/tasks/tools/"
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  echo "==> Installing the Python Kubernetes client (PyPI kubernetes==37.0.2)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes==37.0.2 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes==37.0.2
fi

start_dockerd
pod_network_sink
deploy/images.sh

echo "==> Building"
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  echo "==> Testing (cargo nextest)"
  cargo nextest run --workspace --locked --no-fail-fast
else
  echo "==> Testing (cargo test; install cargo-nextest for per-test timeouts)"
  cargo test --workspace --locked --no-fail-fast
fi
