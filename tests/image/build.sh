#!/usr/bin/env bash
# Build the test image FROM scratch with Debian's busybox-static (no registry is needed).
set -euo pipefail
image=${NP_TEST_IMAGE:-netplumb/busybox:test}
if docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/rootfs/var/www"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$ctx/rootfs/etc/passwd"
echo 'root:x:0:' >"$ctx/rootfs/etc/group"
echo 'netplumb' >"$ctx/rootfs/var/www/index.html"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD ["/bin/sh"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null
echo "image: built $image"
