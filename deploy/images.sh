#!/usr/bin/env bash
# Builds the images pods here use, from Debian packages (no registry is needed or reachable):
#   busybox:latest, busybox:1.36   Debian's busybox-static with every applet linked
#   registry.k8s.io/pause:3.10     the sandbox container: a shell that waits and exits on TERM
#   netexec:1.2                    busybox plus our test server (deploy/netexec/netexec.rs, built
#                                  here with rustc as a static binary): HTTP and UDP answers, and
#                                  requests echoed back (1.2); netexec:1.1 is tagged from it when
#                                  missing (1.2 answers everything 1.1 did)
# Idempotent: an image that exists is kept. Needs a running dockerd.
set -euo pipefail
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "images.sh: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

if ! docker image inspect busybox:latest >/dev/null 2>&1; then
  echo "==> Building busybox:latest from $BUSYBOX"
  cp "$BUSYBOX" "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /etc /root /home /var/www && chmod 1777 /tmp && \
    echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && \
    echo 'nobody:x:65534:65534:nobody:/home:/bin/false' >> /etc/passwd && \
    echo 'root:x:0:' > /etc/group && echo 'nogroup:x:65534:' >> /etc/group
ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin
CMD ["sh"]
DOCKERFILE
  docker build -q -t busybox:latest "$ctx" >/dev/null
fi
for tag in 1.36 1.37 1.28 1.29; do
  docker image inspect "busybox:$tag" >/dev/null 2>&1 || docker tag busybox:latest "busybox:$tag"
done

if ! docker image inspect registry.k8s.io/pause:3.10 >/dev/null 2>&1; then
  echo "==> Building registry.k8s.io/pause:3.10"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox:latest
ENTRYPOINT ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
DOCKERFILE
  docker build -q -t registry.k8s.io/pause:3.10 "$ctx" >/dev/null
fi

if ! docker image inspect netexec:1.2 >/dev/null 2>&1; then
  echo "==> Building netexec:1.2 (deploy/netexec/netexec.rs)"
  command -v rustc >/dev/null || { echo "images.sh: rustc is needed to build netexec" >&2; exit 1; }
  rustc --edition 2021 -O -C target-feature=+crt-static -C strip=symbols \
    "$(dirname "$0")/netexec/netexec.rs" -o "$ctx/netexec"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox:latest
COPY netexec /netexec
ENTRYPOINT ["/netexec"]
DOCKERFILE
  docker build -q -t netexec:1.2 "$ctx" >/dev/null
fi
docker image inspect netexec:1.1 >/dev/null 2>&1 || docker tag netexec:1.2 netexec:1.1
