#!/usr/bin/env bash
# Start (or report) the daemons the tests need in the root namespace: dockerd and Open vSwitch.
# Only starts what is not running; never stops what it did not start.
set -euo pipefail
cmd=${1:-start}
state=/run/netplumb-services
mkdir -p "$state"

docker_up() { docker info >/dev/null 2>&1; }
ovs_up() { ovs-vsctl --timeout=2 show >/dev/null 2>&1; }

case "$cmd" in
  start)
    if ! docker_up; then
      echo "services: starting dockerd"
      nohup dockerd >/var/log/netplumb-dockerd.log 2>&1 &
      echo $! >"$state/dockerd.pid"
      for _ in $(seq 1 60); do docker_up && break; sleep 0.5; done
      docker_up || { echo "services: dockerd did not start, see /var/log/netplumb-dockerd.log" >&2; exit 1; }
    fi
    if ! ovs_up; then
      echo "services: starting Open vSwitch (userspace datapath available)"
      /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
      ovs_up || { echo "services: Open vSwitch did not start" >&2; exit 1; }
    fi
    # Userspace datapath needs TSO support, or TCP through veths arrives with bad checksums.
    ovs-vsctl --timeout=5 set Open_vSwitch . other_config:userspace-tso-enable=true
    ;;
  status)
    docker_up && echo "dockerd: up" || echo "dockerd: down"
    ovs_up && echo "ovs: up" || echo "ovs: down"
    ;;
  *) echo "usage: $0 start|status" >&2; exit 2 ;;
esac
