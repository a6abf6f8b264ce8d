# Sourced by the README's commands: checks what a Debian 12 machine needs, installs missing
# Debian packages when run as root, and otherwise says exactly what is missing.

# need_packages PKG...: every package installed, or installed now (root), or a clear error.
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "==> Installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Missing Debian packages: ${missing[*]}" >&2
    echo "Install them with: sudo apt-get install -y ${missing[*]}   (or run this command as root)" >&2
    exit 1
  fi
}

# need_command CMD HOW: the command exists, or a clear error saying how to get it.
need_command() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "Missing command: $1 ($2)" >&2
  exit 1
}

# Packages for building (etcd-client and our protos need protoc and the well-known types).
BUILD_PACKAGES=(protobuf-compiler libprotobuf-dev gcc)
# Packages for running a cluster on this machine.
RUN_PACKAGES=(etcd-server)

# Packages for nodes: Docker runs the pods, busybox-static makes the local images, iptables for
# services, conntrack so kube-proxy can drop stale UDP flows when a Service's endpoints change.
NODE_PACKAGES=(docker.io busybox-static iptables conntrack)
# Packages only the tests use: a private registry with password auth.
TEST_PACKAGES=(docker-registry apache2-utils)

# start_dockerd: dockerd answers, or is started now (root) and waited for.
start_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "dockerd is not running; start it (as root: dockerd &)" >&2
    exit 1
  fi
  echo "==> Starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "dockerd did not start; last log lines:" >&2
  tail -20 /var/log/dockerd.log >&2
  exit 1
}

# pod_network_sink: the service and pod ranges route to an empty bridge, so a packet nobody
# translated dies here instead of leaving the machine (see DESIGN.md, "Safety rule").
pod_network_sink() {
  [ "$(id -u)" -eq 0 ] || return 0
  ip link show kube-sink >/dev/null 2>&1 || ip link add kube-sink type bridge
  ip link set kube-sink up
  ip route replace 10.96.0.0/12 dev kube-sink
  ip route replace 10.244.0.0/16 dev kube-sink
}
