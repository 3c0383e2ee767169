#!/usr/bin/env bash
# Install everything the demo and the tests need on a fresh Debian 12 machine (run as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/env.sh
source "$here/env.sh"

apt_packages=(docker.io openvswitch-switch openvswitch-common busybox-static openssh-server openssh-client
              iptables conntrack iproute2 python3-venv procps iputils-ping util-linux
              python3-pyroute2 python3-docker  # the modules under test run with Debian's python3, as on a target host
              git shellcheck)  # git + shellcheck: scripts/test.sh sanity stage
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$NP_VENV/bin/python" ]; then
  python3 -m venv "$NP_VENV"
fi
if ! cmp -s "$NP_REPO/requirements-dev.txt" "$NP_VENV/.requirements-dev.txt" 2>/dev/null; then
  "$NP_VENV/bin/pip" install -q --upgrade pip
  "$NP_VENV/bin/pip" install -q -r "$NP_REPO/requirements-dev.txt"
  cp "$NP_REPO/requirements-dev.txt" "$NP_VENV/.requirements-dev.txt"
fi
"$here/services.sh" start
"$NP_REPO/tests/image/build.sh"
