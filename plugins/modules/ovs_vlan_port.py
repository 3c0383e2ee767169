#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: ovs_vlan_port
short_description: VLAN settings (tag, trunks, mode) and external_ids of Open vSwitch ports
version_added: 0.1.0
description:
  - Manages the VLAN columns (C(tag), C(trunks), C(vlan_mode)) and chosen C(external_ids) keys of any Open
    vSwitch port (uplinks, internal ports, ports made by other tools), adds a port for an existing interface,
    or removes a port.
  - Reads the database with one C(ovs-vsctl --format=json) call and writes every change of a run, all items of
    O(ports) included, with ONE C(ovs-vsctl ... -- ... -- ...) call, so OVS applies all of it or none. A port
    it adds gets its tag in that same transaction, so it is never untagged for a moment.
  - After the transaction the C(ofport) and C(error) of every port and bridge the run added are read back;
    C(ovs-vsctl) exits 0 even when ovs-vswitchd could not open an interface (a missing interface, or a
    C(system) bridge on a host without the OVS kernel module). The module then fails with OVS's own error
    text and undoes its whole transaction.
  - Idempotent. An option left unset is left as it is; only the listed O(external_ids) keys are managed.
  - "Lockout guard: without O(force=true) the module refuses, before changing anything, (1) to change a port
    that carries the host's own addresses (global addresses in the host namespace on its interface, for
    instance the bridge's internal port holding the host IP) so that its untagged traffic stops, to remove
    such a port or to add such an interface to a bridge; (2) to remove the uplink of a bridge whose internal
    port carries the host's addresses untagged, or to change that uplink so that its untagged traffic stops."
  - "Untagged traffic stops when the resulting mode is V(access), V(native-untagged) or V(native-tagged) with
    a non-zero tag, V(trunk) with a trunks list that does not contain VLAN 0 (an empty list trunks every
    VLAN), or V(native-tagged) with no tag and such a trunks list. An empty C(vlan_mode) means V(access) when
    a tag is set, else V(trunk) (OVS's rule)."
  - "Any port of that bridge counts as its uplink except internal ports, tap devices, and ports marked as a
    container's or a VM's by their interface's C(external_ids) (C(container_id) as ovs-docker and
    M(netplumb.pipework.docker_veth) set, C(iface-id), C(vm-uuid) or C(vm-id) as libvirt, OpenStack and OVN
    set)."
  - "A missing bridge is created (with C(external_ids:netplumb_owner)) only when its name starts with C(ovs)
    or O(datapath_type) is given, so a typo never creates an isolated bridge. Rows the module creates carry
    C(external_ids:netplumb_owner=netplumb.pipework)."
  - Runs under a host-level lock, so concurrent runs of the collection's modules against one host take turns.
author:
  - netplumb.pipework developers (!UNKNOWN)
requirements:
  - Open vSwitch (C(ovs-vsctl)) on the target host
  - pyroute2 0.7 or later on the target host (to read the host's addresses for the lockout guard)
attributes:
  check_mode:
    description: Can run in check mode and return the changed status it predicts without changing the target.
    support: full
    details: Reads the database and the host's addresses, plans, and changes nothing.
  diff_mode:
    description: Returns details on what has changed (or would change, in check mode) in diff mode.
    support: full
    details: Before and after of each port's bridge, tag, trunks, vlan_mode and external_ids.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
options:
  port:
    description:
      - Name of the port (for a port added by this module, also the name of its interface).
      - 1-15 bytes, no C(/), C(:) or white space, not starting with C(-).
      - Required unless O(ports) is given; mutually exclusive with O(ports).
    type: str
  bridge:
    description:
      - The bridge the port is on.
      - Required to add a port that is not on any bridge. For a port that exists, it is optional and, when
        given, must name the bridge the port is on (the module never moves a port between bridges).
      - With O(state=absent), when given, the port is removed only if it is on this bridge.
    type: str
  tag:
    description:
      - The port's VLAN tag (OVS C(tag) column), 1-4094; for an access port its VLAN, for a native-tagged or
        native-untagged port its native VLAN.
      - V(0) clears the tag. Unset leaves it as it is.
    type: int
  trunks:
    description:
      - VLANs the port trunks (OVS C(trunks) column), each 1-4094.
      - V([]) clears the list, which makes a trunk port trunk every VLAN. Unset leaves it as it is.
      - Not with O(vlan_mode=access).
    type: list
    elements: int
  vlan_mode:
    description:
      - OVS C(vlan_mode) of the port. Unset leaves it as it is (an empty mode means access when a tag is set,
        else trunk).
      - O(tag) is not allowed with V(trunk), O(trunks) not with V(access).
    type: str
    choices: [access, trunk, native-tagged, native-untagged]
  external_ids:
    description:
      - Keys of the port's C(external_ids) to set. Only the listed keys are managed; other keys are left as
        they are. A key whose value is V(null) is removed.
      - Values are stored as strings (V(true)/V(false) for booleans).
    type: dict
  state:
    description:
      - V(present) adds the port if needed and sets the given columns.
      - V(absent) removes the port from its bridge (never the bridge, never a bridge's own local port).
        O(tag), O(trunks), O(vlan_mode) and O(external_ids) are then ignored.
      - Defaults to V(present).
    type: str
    choices: [present, absent]
  datapath_type:
    description:
      - C(datapath_type) of a bridge this run must create; V(netdev) is the userspace datapath.
      - A missing bridge is created only when its name starts with C(ovs) or this option is given; any other
        missing bridge is an error. Defaults to V(system) for a bridge whose name starts with C(ovs).
      - When given for a bridge that exists with another datapath type, the module fails.
    type: str
  force:
    description:
      - Apply a change that the lockout guard refuses (see the description). The result then carries a
        warning naming the port and the host addresses concerned.
      - Defaults to V(false).
    type: bool
  ports:
    description:
      - Many ports applied in ONE OVS transaction. Each item takes the same keys as the top-level options;
        top-level values other than O(port) are defaults for every item (an item's own value replaces the
        default; dicts such as O(external_ids) are not merged).
      - A port may appear once. Mutually exclusive with a top-level O(port).
    type: list
    elements: dict
    suboptions:
      port:
        description: See the top-level O(port).
        type: str
      bridge:
        description: See the top-level O(bridge).
        type: str
      tag:
        description: See the top-level O(tag).
        type: int
      trunks:
        description: See the top-level O(trunks).
        type: list
        elements: int
      vlan_mode:
        description: See the top-level O(vlan_mode).
        type: str
        choices: [access, trunk, native-tagged, native-untagged]
      external_ids:
        description: See the top-level O(external_ids).
        type: dict
      state:
        description: See the top-level O(state).
        type: str
        choices: [present, absent]
      datapath_type:
        description: See the top-level O(datapath_type).
        type: str
      force:
        description: See the top-level O(force).
        type: bool
  database_socket:
    description:
      - OVSDB to talk to, as C(ovs-vsctl --db) takes it.
      - Defaults to C(unix:/var/run/openvswitch/db.sock).
    type: str
  timeout:
    description: Seconds C(ovs-vsctl) waits for the database and for ovs-vswitchd.
    type: int
    default: 30
notes:
  - Ports are identified by name; OVS port names are unique across bridges.
  - "To clear a value: O(tag=0), O(trunks=[]), an O(external_ids) key with value V(null)."
seealso:
  - module: netplumb.pipework.docker_veth
'''

EXAMPLES = r'''
- name: Put an existing port into VLAN 100 (access)
  netplumb.pipework.ovs_vlan_port:
    port: vnet3
    tag: 100

- name: Make eth1 a trunk of VLANs 100 and 200 on ovs0 (adds the port if needed), one transaction
  netplumb.pipework.ovs_vlan_port:
    bridge: ovs0
    ports:
      - {port: eth1, vlan_mode: trunk, trunks: [100, 200], external_ids: {role: uplink}}
      - {port: vnet3, tag: 100}
      - {port: vnet4, tag: 200}

- name: Userspace bridge created on the fly (name does not start with ovs, so datapath_type is needed)
  netplumb.pipework.ovs_vlan_port:
    bridge: lab-sw
    datapath_type: netdev
    port: veth-lab1
    tag: 10

- name: Untag a port and drop one external_ids key
  netplumb.pipework.ovs_vlan_port:
    port: vnet3
    tag: 0
    external_ids:
      role: null

- name: Tag the bridge's internal port that holds the host address (refused without force)
  netplumb.pipework.ovs_vlan_port:
    port: ovs0
    tag: 10
    force: true

- name: Remove a port from its bridge
  netplumb.pipework.ovs_vlan_port:
    bridge: ovs0
    port: vnet4
    state: absent
'''

RETURN = r'''
ports:
  description: One entry per port, in the order given, with its settings after the run (planned in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Port name.
      type: str
      sample: eth1
    bridge:
      description: Bridge the port is on (for a removed port, the bridge it was removed from).
      type: str
      sample: ovs0
    state:
      description: The requested state.
      type: str
      sample: present
    tag:
      description: VLAN tag, or null when none.
      type: int
      sample: 100
    trunks:
      description: Trunked VLANs (empty when none are listed).
      type: list
      elements: int
      sample: [100, 200]
    vlan_mode:
      description: The C(vlan_mode) column, or null when empty.
      type: str
      sample: trunk
    external_ids:
      description: All of the port's C(external_ids), managed keys and others.
      type: dict
      sample: {role: uplink}
    changed:
      description: Whether this port changed.
      type: bool
    action:
      description: What was done.
      type: str
      choices: [created, updated, removed, none]
      sample: updated
    changes:
      description: Human-readable list of the changes planned or made.
      type: list
      elements: str
      sample: ["set tag of vnet3 to 100"]
bridges:
  description: Per bridge a port was added to (or named with O(datapath_type)), whether this run created it.
  returned: always
  type: dict
  sample: {ovs0: {created: false, datapath_type: system, changes: []}}
commands:
  description: The C(ovs-vsctl) commands of the run's one transaction (each a list of words), planned or applied.
  returned: always
  type: list
  elements: list
  sample: [["set", "Port", "vnet3", "tag=100"]]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netplumb.pipework.plugins.module_utils.common.module_edge import run_and_exit
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.apply import Runner
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.spec import ARGUMENT_SPEC


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if module.get_bin_path('ovs-vsctl') is None:
        module.fail_json(msg='ovs-vsctl is not installed on the target host (package openvswitch-switch; '
                             'the prerequisites role installs it)')
    runner = Runner(module.params, module.check_mode, module.run_command)
    run_and_exit(module, runner)


if __name__ == '__main__':
    main()
