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
