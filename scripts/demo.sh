#!/usr/bin/env bash
# The demo (scenario S3): two hosts, OVS VLANs across a trunk, built with one command.
#
#   bash scripts/demo.sh [up]   install what is missing (scripts/setup.sh), bring a two-host SSH lab up with
#                               the article's values (lab/examples/s3.json: hostA 10.10.101.105, hostB .106 on
#                               eth0, gateway .254), start test1..test4, write the role's variables for the
#                               lab's inventory, run playbooks/multihost_vlan.yml over SSH, then print the
#                               S3 connectivity matrix (ping and TCP from inside the containers, expected
#                               value beside each cell), check both hosts still answer SSH, and say PASS/FAIL.
#   bash scripts/demo.sh down   remove the lab and the demo's containers; nothing of the demo is left.
#
# Environment: NP_DEMO_LAB (lab name, default "demo"), NP_DEMO_PREFIX (container name prefix, default "",
# so the containers are test1..test4), NP_DEMO_SKIP_SETUP=1 (do not run scripts/setup.sh).
# Everything happens in the lab's namespaces; the root namespace gets no address, route or rule.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cmd=${1:-up}
lab=${NP_DEMO_LAB:-demo}
prefix=${NP_DEMO_PREFIX:-}
label="netplumb.pipework.demo=$lab"
names=("${prefix}test1" "${prefix}test2" "${prefix}test3" "${prefix}test4")

say() { printf '\n==> %s\n' "$*"; }

demo_containers() { docker ps -aq --filter "label=$label" 2>/dev/null || true; }

# host_bridge_migrate keeps its snapshot records in /run/netplumb-pipework/bridge_migrate/, named after the
# host's network namespace inode; the lab's hosts share the root /run, so the records outlive the lab.
lab_records() {
  python3 - "$repo/lab-state/$lab/state.json" <<'PY'
import glob, json, sys
try:
    namespaces = json.load(open(sys.argv[1])).get('namespaces', {})
except (OSError, ValueError):
    namespaces = {}
for inode in namespaces.values():
    if inode:
        print('\n'.join(glob.glob('/run/netplumb-pipework/bridge_migrate/netns-%d.*' % inode)))
PY
}

down() {
  # shellcheck source=scripts/env.sh
  source "$here/env.sh"
  local records
  records=$(lab_records)
  say "Removing lab $lab"
  python3 "$repo/lab/lab.py" down --name "$lab"
  if [ -n "$records" ]; then
    # The namespaces are gone with the lab: these records describe nothing any more.
    # shellcheck disable=SC2086  # one path per word, no spaces in them
    rm -f $records
  fi
  local ids
  ids=$(demo_containers)
  if [ -n "$ids" ]; then
    say "Removing the demo's containers"
    # shellcheck disable=SC2086  # one ID per word
    docker rm -f $ids >/dev/null
  fi
  echo "demo: down (lab $lab and its containers removed)"
}

start_containers() {
  local name image=${NP_TEST_IMAGE:-netplumb/busybox:test}
  for name in "${names[@]}"; do
    if docker container inspect "$name" >/dev/null 2>&1; then
      if [ "$(docker container inspect -f '{{ index .Config.Labels "netplumb.pipework.demo" }}' "$name")" != "$lab" ]; then
        echo "demo: a container named $name exists and is not this demo's; remove it or set NP_DEMO_PREFIX" >&2
        exit 1
      fi
      if [ "$(docker container inspect -f '{{ .State.Running }}' "$name")" = true ]; then
        echo "  $name: running"
        continue
      fi
      docker rm -f "$name" >/dev/null
    fi
    docker run -d --net=none --init --label "$label" --name "$name" "$image" sleep 1000000 >/dev/null
    echo "  $name: started"
  done
}

write_vars() {
  # The role's variables for the lab's inventory (lab-state/<lab>/inventory.yml, group "lab"): what
  # playbooks/inventory/multihost_vlan/ holds for real hosts, with the userspace datapath (no kernel module).
  local dir=$1 uplink=$2
  mkdir -p "$dir/group_vars" "$dir/host_vars"
  cat >"$dir/group_vars/lab.yml" <<EOF
---
# Written by scripts/demo.sh for lab $lab.
multihost_vlan_uplink: $uplink
multihost_vlan_bridge: ovs0
multihost_vlan_datapath_type: netdev
multihost_vlan_rollback_timeout: 120
EOF
  cat >"$dir/host_vars/hostA.yml" <<EOF
---
multihost_vlan_containers:
  - {container: ${names[0]}, address: 192.168.0.1/24, vlan: 100}
  - {container: ${names[1]}, address: 192.168.0.2/24, vlan: 200}
EOF
  cat >"$dir/host_vars/hostB.yml" <<EOF
---
multihost_vlan_containers:
  - {container: ${names[2]}, address: 192.168.0.3/24, vlan: 100}
  - {container: ${names[3]}, address: 192.168.0.4/24, vlan: 200}
EOF
}

up() {
  if [ "${NP_DEMO_SKIP_SETUP:-0}" != 1 ]; then
    say "Installing what is missing, starting dockerd and Open vSwitch, building the test image (scripts/setup.sh)"
    bash "$here/setup.sh"
  fi
  # shellcheck source=scripts/env.sh
  source "$here/env.sh"

  say "Bringing the two-host lab up (lab/examples/s3.json as lab $lab)"
  local before after path
  before=$(lab_records)
  python3 "$repo/lab/lab.py" up --config "$repo/lab/examples/s3.json" --name "$lab"
  after=" $(lab_records | tr '\n' ' ') "
  for path in $before; do  # records of an earlier instance of this lab (up rebuilt it)
    case "$after" in *" $path "*) ;; *) rm -f "$path" ;; esac
  done
  local inventory state uplink
  inventory=$(python3 "$repo/lab/lab.py" inventory --name "$lab")
  state=$(dirname "$inventory")
  uplink=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uplink"])' "$repo/lab/examples/s3.json")

  say "Starting the containers (docker run --net=none)"
  start_containers

  say "Writing the role's variables for the lab: $state/group_vars/lab.yml, $state/host_vars/host{A,B}.yml"
  write_vars "$state" "$uplink"

  say "ansible-playbook playbooks/multihost_vlan.yml -i $inventory"
  local rc=0
  (cd "$repo" && ansible-playbook playbooks/multihost_vlan.yml -i "$inventory") || rc=$?
  if [ "$rc" != 0 ]; then
    echo "demo: the playbook failed (rc=$rc); the hosts reverted what they could not confirm." >&2
  fi

  say "Scenario S3, measured"
  local mrc=0
  python3 "$here/connectivity_matrix.py" --lab "$lab" --group-name VLAN \
    --title "S3 connectivity from inside the containers (test1/test3 on VLAN 100, test2/test4 on VLAN 200)" \
    --node "${names[0]},192.168.0.1,100,hostA" --node "${names[1]},192.168.0.2,200,hostA" \
    --node "${names[2]},192.168.0.3,100,hostB" --node "${names[3]},192.168.0.4,200,hostB" || mrc=$?
  echo
  echo "Tear down: bash scripts/demo.sh down"
  if [ "$rc" != 0 ] || [ "$mrc" != 0 ]; then
    echo "demo: FAIL"
    exit 1
  fi
  echo "demo: PASS"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
