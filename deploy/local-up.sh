#!/usr/bin/env bash
# Brings the system up on this machine: etcd and the apiserver (the rest of the components join
# as they are built), writes an admin kubeconfig, applies a demo app and prints how to use
# kubectl. Installs missing Debian packages when run as root; otherwise says what is missing.
#
#   deploy/local-up.sh           build (release), start, apply the demo
#   deploy/local-up.sh --down    stop everything this script started
#
# State (etcd data, certificates, logs) lives in $CLUSTER_DIR (default: ./.cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/prereqs.sh

CLUSTER_DIR=${CLUSTER_DIR:-$PWD/.cluster}
PROFILE=${BUILD_PROFILE:-release}
ETCD_PORT=${ETCD_PORT:-12379}
API_PORT=${API_PORT:-6443}
KUBECONFIG_OUT=$CLUSTER_DIR/admin.kubeconfig

stop() {
  for name in apiserver etcd; do
    pidfile=$CLUSTER_DIR/$name.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      kill "$(cat "$pidfile")" && echo "Stopped $name"
      for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
  done
}

if [ "${1:-}" = "--down" ]; then
  stop
  exit 0
fi

need_command cargo "install Rust with rustup: https://rustup.rs"
need_packages "${BUILD_PACKAGES[@]}" "${RUN_PACKAGES[@]}"

echo "==> Building ($PROFILE)"
if [ "$PROFILE" = release ]; then cargo build --release --bins --locked; BIN=target/release; else cargo build --bins --locked; BIN=target/debug; fi

mkdir -p "$CLUSTER_DIR/logs"
stop

echo "==> Starting etcd on 127.0.0.1:$ETCD_PORT"
etcd --name local --data-dir "$CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "local=http://127.0.0.1:$((ETCD_PORT + 1))" --logger zap --log-level warn \
  >"$CLUSTER_DIR/logs/etcd.log" 2>&1 &
echo $! >"$CLUSTER_DIR/etcd.pid"

echo "==> Starting the apiserver on :$API_PORT"
"$BIN/apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" --secure-port "$API_PORT" \
  --cert-dir "$CLUSTER_DIR/pki" --admin-kubeconfig "$KUBECONFIG_OUT" \
  >"$CLUSTER_DIR/logs/apiserver.log" 2>&1 &
echo $! >"$CLUSTER_DIR/apiserver.pid"

for _ in $(seq 300); do
  if [ -f "$KUBECONFIG_OUT" ] && KUBECONFIG=$KUBECONFIG_OUT kubectl get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$CLUSTER_DIR/apiserver.pid")" 2>/dev/null; then
    echo "The apiserver exited; last log lines:" >&2; tail -20 "$CLUSTER_DIR/logs/apiserver.log" >&2; exit 1
  fi
  sleep 0.2
done
KUBECONFIG=$KUBECONFIG_OUT kubectl get --raw /readyz >/dev/null || { echo "The apiserver did not become ready; see $CLUSTER_DIR/logs" >&2; exit 1; }

if command -v kubectl >/dev/null 2>&1; then
  echo "==> Applying the demo app (tests/manifests/demo.yaml)"
  KUBECONFIG=$KUBECONFIG_OUT kubectl apply -f tests/manifests/demo.yaml 2>&1 \
    || KUBECONFIG=$KUBECONFIG_OUT kubectl create -f tests/manifests/demo.yaml 2>&1 || true
  KUBECONFIG=$KUBECONFIG_OUT kubectl get all,configmaps -n demo
  echo
  echo "Note: the Deployment stays at 0 ready pods until the scheduler, controller-manager and"
  echo "kubelet are built (issues #4-#6); this cluster is the API server on etcd so far."
else
  echo "kubectl is not installed; the API is up at https://127.0.0.1:$API_PORT" >&2
fi

cat <<MSG

The cluster is up. Point kubectl at it:

  export KUBECONFIG=$KUBECONFIG_OUT
  kubectl get namespaces

Logs: $CLUSTER_DIR/logs    Stop: deploy/local-up.sh --down
MSG
