#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: docker_veth
short_description: Attach containers to Linux or Open vSwitch bridges with veth pairs
version_added: 0.1.0
description:
  - Does what C(pipework) and C(ovs-docker add-port) do by hand, declaratively. It creates a veth pair whose
    container end is created directly inside the container's network namespace, plugs the host end into a
    Linux bridge or an Open vSwitch bridge (port and VLAN tag in one OVSDB transaction, never untagged for a
    moment), and configures addresses, routes, MAC and MTU inside the container.
  - Idempotent. A matching attachment reports no change; a differing one is corrected in place where the
    kernel allows, else recreated, and the result says which.
  - Many attachments (O(attachments)) go in one run, with one Docker API connection, one netlink socket per
    namespace, one OVS transaction.
  - An attachment is identified by (container ID or namespace, O(ifname)). A container recreated under the
    same name is a new attachment, and the old one's leftovers (stale OVS ports) are purged.
  - Rows the module adds to OVS carry C(external_ids) C(container_id) and C(container_iface) (the keys
    C(ovs-docker) uses) plus C(netplumb_target) (the container name) and C(netplumb_owner).
  - A run that fails half-way removes what it created (veths, OVS ports, bridges, addresses) before failing.
  - Runs under a host-level lock, so concurrent runs against one host take turns.
  - "To clear an optional value: O(gateway=''), O(address=[]), O(routes=[]), O(vlan=0).
    An option left unset leaves that setting as it is."
  - "After O(gateway) replaces a container's default route (for instance Docker's own route through C(eth0)),
    replies to Docker's own published ports (C(docker run -p)) for that container leave through the new
    route; publish with M(netplumb.pipework.nat_portmap) instead, or do not set O(gateway)."
author:
  - netplumb.pipework developers (!UNKNOWN)
requirements:
  - pyroute2 0.7 or later on the target host
  - the Docker SDK for Python on the target host (for O(container))
  - Open vSwitch (C(ovs-vsctl)) on the target host for OVS bridges
extends_documentation_fragment:
  - netplumb.pipework.attachment
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
options:
  attachments:
    description:
      - Many attachments applied in one run. Each item takes the same keys as the top-level options
        (a target, O(bridge), O(address), and so on); top-level values other than the target are defaults
        for every item.
      - Mutually exclusive with a top-level O(container), O(netns) or O(pid).
    type: list
    elements: dict
    suboptions:
      container:
        description: See the top-level O(container).
        type: str
      netns:
        description: See the top-level O(netns).
        type: str
      pid:
        description: See the top-level O(pid).
        type: int
      bridge:
        description: See the top-level O(bridge).
        type: str
      bridge_type:
        description: See the top-level O(bridge_type).
        type: str
        choices: [auto, linux, ovs]
      datapath_type:
        description: See the top-level O(datapath_type).
        type: str
      bridge_address:
        description: See the top-level O(bridge_address).
        type: str
      ifname:
        description: See the top-level O(ifname).
        type: str
      host_ifname:
        description: See the top-level O(host_ifname).
        type: str
      address:
        description: See the top-level O(address).
        type: list
        elements: str
      gateway:
        description: See the top-level O(gateway).
        type: str
      routes:
        description: See the top-level O(routes).
        type: list
        elements: dict
        suboptions:
          dest:
            description: Destination network in CIDR form.
            type: str
            required: true
          via:
            description: Next hop; omit for an on-link route.
            type: str
      mac:
        description: See the top-level O(mac).
        type: str
      mtu:
        description: See the top-level O(mtu).
        type: int
      vlan:
        description: See the top-level O(vlan).
        type: int
        aliases: [tag]
      state:
        description: See the top-level O(state).
        type: str
        choices: [present, absent]
  database_socket:
    description:
      - OVSDB to talk to, as C(ovs-vsctl --db) takes it.
      - Defaults to C(unix:/var/run/openvswitch/db.sock).
    type: str
  docker_host:
    description:
      - Docker daemon URL for the Docker SDK, for example C(unix:///var/run/docker.sock).
      - Defaults to the SDK's default (C(DOCKER_HOST) or the standard socket).
    type: str
  timeout:
    description: Seconds to wait for Docker and for C(ovs-vsctl).
    type: int
    default: 30
notes:
  - Addresses, routes and veths live in the kernel only. A container restart or a host reboot loses them;
    the P(netplumb.pipework.persistence#role) role's agent re-applies them from the records this module
    keeps (C(/var/lib/netplumb-pipework), or C($NETPLUMB_STATE_DIR)), or run the playbook again.
seealso:
  - module: netplumb.pipework.ovs_vlan_port
  - module: netplumb.pipework.nat_portmap
'''

EXAMPLES = r'''
- name: Scenario S2 - four containers on one OVS bridge, two VLANs
  netplumb.pipework.docker_veth:
    bridge: ovs0
    attachments:
      - {container: test1, address: 192.168.0.1/24, vlan: 100}
      - {container: test2, address: 192.168.0.2/24, vlan: 100}
      - {container: test3, address: 192.168.0.3/24, vlan: 200}
      - {container: test4, address: 192.168.0.4/24, vlan: 200}

- name: Put a container on the host LAN through br0 (pipework br0 test1 192.168.1.150/24@192.168.1.1)
  netplumb.pipework.docker_veth:
    container: test1
    bridge: br0
    address: 192.168.1.150/24
    gateway: 192.168.1.1

- name: Docker-style bridge with a host gateway address, as docker0 has
  netplumb.pipework.docker_veth:
    container: web
    bridge: br-web
    bridge_address: 172.30.0.1/16
    address: 172.30.0.2/16
    gateway: 172.30.0.1

- name: Remove the default route the module set, keep the interface
  netplumb.pipework.docker_veth:
    container: test1
    bridge: br0
    gateway: ''

- name: Detach (also purges what is left after the container was removed)
  netplumb.pipework.docker_veth:
    container: test1
    state: absent
'''

RETURN = r'''
attachments:
  description: One entry per attachment, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    container:
      description: Container name.
      type: str
      sample: test1
    container_id:
      description: Full container ID.
      type: str
    pid:
      description: PID whose network namespace holds the container end.
      type: int
    netns:
      description: The O(netns) target, when given.
      type: str
    target:
      description: The handle recorded in OVS C(external_ids:netplumb_target).
      type: str
    ifname:
      description: Container-side interface name.
      type: str
      sample: eth1
    host_ifname:
      description: Host-side interface name (also the OVS port name).
      type: str
      sample: np3f9a0c12be1
    mac:
      description: MAC address of the container end.
      type: str
    mtu:
      description: MTU of both ends.
      type: int
    addresses:
      description: Addresses of the container end.
      type: list
      elements: str
    bridge:
      description: Bridge the host end is plugged into.
      type: str
    bridge_type:
      description: C(linux) or C(ovs).
      type: str
    vlan:
      description: OVS access tag, or null.
      type: int
    state:
      description: The requested state.
      type: str
    changed:
      description: Whether this attachment changed.
      type: bool
    action:
      description: What was done.
      type: str
      sample: created
      choices: [created, updated, recreated, removed, none]
    changes:
      description: Human-readable list of the changes planned or made.
      type: list
      elements: str
    replaced_default_routes:
      description: Default routes that O(gateway) replaced (so the change is never silent).
      type: list
      elements: str
      returned: when a default route was replaced
bridges:
  description: Per bridge, its type, whether this run created it, and what changed on it.
  returned: always
  type: dict
elapsed:
  description: Seconds spent inside the module (for benchmarks).
  returned: always
  type: float
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netplumb.pipework.plugins.module_utils.common.module_edge import run_and_exit
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.apply import Runner
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import ARGUMENT_SPEC


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    runner = Runner(module.params, module.check_mode, module.run_command,
                    ovs_available=module.get_bin_path('ovs-vsctl') is not None)
    run_and_exit(module, runner)


if __name__ == '__main__':
    main()
