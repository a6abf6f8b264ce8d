#!/usr/bin/env bash
# Brings the system up on this machine: etcd, the apiserver, a kubelet on the local dockerd,
# kube-proxy (the host's iptables), the scheduler and the controller-manager, writes an admin
# kubeconfig, waits for the node to be Ready, runs a demo app, checks that its Service answers on
# its cluster IP from this node, and prints how to use kubectl.
# Installs missing Debian packages and starts dockerd when run as root; otherwise says what is
# missing.
#
#   deploy/local-up.sh           build (release), start, apply the demo
#   deploy/local-up.sh --down    stop everything this script started and remove its pods and
#                                Service rules (kube-proxy --cleanup)
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
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
POD_CIDR=${POD_CIDR:-10.244.0.0/24}

stop() {
  for name in kube-proxy controller-manager scheduler kubelet apiserver etcd; do
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
  # A stopped kubelet leaves its pods running (as upstream's does); --down removes them too.
  if docker info >/dev/null 2>&1; then
    ids=$(docker ps -aq --filter "label=rkube.instance=$NODE_NAME")
    [ -z "$ids" ] || { docker rm -f -v $ids >/dev/null && echo "Removed the node's containers"; }
    docker network rm "kpods-$NODE_NAME" >/dev/null 2>&1 || true
  fi
  { grep -o " $CLUSTER_DIR/kubelet/[^ ]*" /proc/self/mounts 2>/dev/null || true; } | while read -r m; do umount "$m" || true; done
  # A stopped kube-proxy leaves its rules (as upstream's does); --down removes them too.
  for bin in target/release/kube-proxy target/debug/kube-proxy; do
    # The first binary that can (a stale build may predate --cleanup).
    if [ -x "$bin" ] && "$bin" --cleanup 2>/dev/null; then echo "Removed kube-proxy's iptables rules"; break; fi
  done
  exit 0
fi

need_command cargo "install Rust with rustup: https://rustup.rs"
need_packages "${BUILD_PACKAGES[@]}" "${RUN_PACKAGES[@]}" "${NODE_PACKAGES[@]}"
start_dockerd
pod_network_sink
deploy/images.sh

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

echo "==> Starting the kubelet (node $NODE_NAME, pods in $POD_CIDR)"
"$BIN/kubelet" --kubeconfig "$KUBECONFIG_OUT" --hostname-override "$NODE_NAME" --pod-cidr "$POD_CIDR" \
  --root-dir "$CLUSTER_DIR/kubelet" --pod-logs-dir "$CLUSTER_DIR/pods" \
  >"$CLUSTER_DIR/logs/kubelet.log" 2>&1 &
echo $! >"$CLUSTER_DIR/kubelet.pid"

echo "==> Starting kube-proxy (Services in the host's iptables)"
"$BIN/kube-proxy" --kubeconfig "$KUBECONFIG_OUT" --hostname-override "$NODE_NAME" \
  >"$CLUSTER_DIR/logs/kube-proxy.log" 2>&1 &
echo $! >"$CLUSTER_DIR/kube-proxy.pid"

echo "==> Starting the scheduler"
"$BIN/scheduler" --kubeconfig "$KUBECONFIG_OUT" >"$CLUSTER_DIR/logs/scheduler.log" 2>&1 &
echo $! >"$CLUSTER_DIR/scheduler.pid"

echo "==> Starting the controller-manager"
# The apiserver's service account key signs the tokens of ServiceAccount token Secrets.
"$BIN/controller-manager" --kubeconfig "$KUBECONFIG_OUT" \
  --service-account-private-key-file "$CLUSTER_DIR/pki/sa.key" --root-ca-file "$CLUSTER_DIR/pki/ca.crt" \
  >"$CLUSTER_DIR/logs/controller-manager.log" 2>&1 &
echo $! >"$CLUSTER_DIR/controller-manager.pid"

if command -v kubectl >/dev/null 2>&1; then
  export KUBECONFIG=$KUBECONFIG_OUT
  echo "==> Waiting for node $NODE_NAME to be Ready"
  # `kubectl wait` fails at once on a node that has not registered yet: wait for it to exist.
  for _ in $(seq 120); do kubectl get "node/$NODE_NAME" >/dev/null 2>&1 && break; sleep 0.5; done
  if ! kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s; then
    echo "The node did not become Ready; last kubelet log lines:" >&2; tail -20 "$CLUSTER_DIR/logs/kubelet.log" >&2; exit 1
  fi
  echo "==> Applying the demo app (tests/manifests/demo.yaml, demo-pod.yaml)"
  kubectl apply -f tests/manifests/demo.yaml
  kubectl apply -f tests/manifests/demo-pod.yaml
  kubectl wait --for=condition=Ready pod/hello -n demo --timeout=120s
  kubectl rollout status deployment/web -n demo --timeout=120s
  # Through kube-proxy's rules: the sink routes above keep a packet nobody translated on this host.
  web_ip=$(kubectl get service web -n demo -o jsonpath='{.spec.clusterIP}')
  echo "==> Checking that the demo Service answers on its cluster IP $web_ip from this node"
  answered=no
  for _ in $(seq 30); do
    if timeout 3 bash -c "exec 3<>/dev/tcp/$web_ip/80" 2>/dev/null; then answered=yes; break; fi
    sleep 1
  done
  if [ "$answered" = yes ]; then
    echo "The demo Service answers on $web_ip:80"
  else
    echo "The demo Service did not answer on $web_ip:80; last kube-proxy log lines:" >&2
    tail -20 "$CLUSTER_DIR/logs/kube-proxy.log" >&2
    exit 1
  fi
  echo "==> Checking that the cluster DNS resolves web.demo from the demo pod"
  resolved=no
  for _ in $(seq 15); do
    if kubectl exec -n demo hello -- nslookup web.demo.svc.cluster.local 2>/dev/null | grep -q "Address: $web_ip"; then
      resolved=yes; break
    fi
    sleep 1
  done
  if [ "$resolved" = yes ]; then
    echo "web.demo.svc.cluster.local resolves to $web_ip inside the pod"
  else
    echo "The cluster DNS did not resolve web.demo.svc.cluster.local; last kube-proxy log lines:" >&2
    tail -20 "$CLUSTER_DIR/logs/kube-proxy.log" >&2
    exit 1
  fi
  kubectl get nodes -o wide
  kubectl get pods,deployments,services -n demo -o wide
  echo
  echo "The demo pod runs on Docker: docker ps --filter label=rkube.instance=$NODE_NAME"
else
  echo "kubectl is not installed; the API is up at https://127.0.0.1:$API_PORT" >&2
fi

cat <<MSG

The cluster is up. Point kubectl at it:

  export KUBECONFIG=$KUBECONFIG_OUT
  kubectl get namespaces

Logs: $CLUSTER_DIR/logs    Stop: deploy/local-up.sh --down
MSG
