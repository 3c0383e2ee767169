#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_bridge_migrate
short_description: Move a host's uplink into a Linux or Open vSwitch bridge without locking the operator out
version_added: 0.1.0
description:
  - Does properly what the C(pipework) article does by hand to put containers on the host's LAN
    (C(ip addr add ... dev br0; ip addr del ... dev enp0s3; brctl addif br0 enp0s3; ip route ...)).
    Every global IPv4 and IPv6 address of O(uplink) and every route through it (the default route
    included, in any table, with its metric, source address and other attributes) move to O(bridge);
    the bridge gets the uplink's MAC address and MTU, and the uplink becomes a port of the bridge.
  - "The change is one quick step on the host, ordered so the host always has its addresses and a default
    route: the bridge is made ready, the addresses are added to it, the uplink is enslaved, each route is
    replaced by its bridge twin (C(ip route replace): same table, destination and metric), and only then
    are the addresses removed from the uplink."
  - "Commit-confirmed. Before changing anything the module saves a snapshot of the uplink's state (a
    root-only file under C(/run/netplumb-pipework/bridge_migrate/)) and starts a detached revert process
    that restores it after O(rollback_timeout) seconds unless the change is confirmed with O(confirm=true)
    from a new connection. The revert is a standalone copy of the collection's C(rollback.py) started with
    the target's Python: it does not depend on the module's temporary files, does not keep the SSH session
    open, needs neither systemd nor at, and runs in the host's own network namespace."
  - If O(probe) (by default the default gateway) does not answer right after the change, the module
    reverts at once and fails with the reason.
  - Idempotent from any intermediate state. A run that was killed half-way (addresses on both, uplink
    not yet enslaved) is completed by the next run. A re-run while a revert is armed reports it and leaves
    it armed.
  - Warns about what it cannot carry over safely, when it changes something - a DHCP client bound to
    the uplink, addresses with a lease, C(ip rule)s and firewall rules (iptables, nftables) that name
    the uplink.
  - O(state=absent) puts the uplink back exactly as the snapshot describes (addresses, routes, MTU,
    MAC), releases it and removes the bridge's copies of its addresses and routes. The bridge itself
    stays, empty of the uplink, so containers attached to it keep their ports.
  - The uplink's VLAN settings on an Open vSwitch bridge stay OVS's defaults (all VLANs, untagged
    included); M(netplumb.pipework.ovs_vlan_port) changes them.
  - Runs under the collection's host lock, which the revert process takes too, so a confirmation and a
    revert never race.
author:
  - netplumb.pipework developers (!UNKNOWN)
requirements:
  - pyroute2 0.7 or later on the target host
  - iproute2 (C(ip)) on the target host
  - Open vSwitch (C(ovs-vsctl)) on the target host for OVS bridges
attributes:
  check_mode:
    description: Reports the planned changes and the revert it would arm; changes nothing, starts no process.
    support: full
  diff_mode:
    description: Returns the uplink's and the bridge's master, MAC, MTU, addresses and routes before and after.
    support: full
  platform:
    description: Linux hosts (netlink, iproute2; Open vSwitch for OVS bridges).
    support: full
    platforms: posix
options:
  uplink:
    description:
      - The NIC that carries the host's addresses and default route today, for example C(eth0) or C(enp0s3).
    type: str
    required: true
  bridge:
    description:
      - The bridge the uplink goes into; created when missing (see O(bridge_type)).
    type: str
    required: true
  bridge_type:
    description:
      - C(linux) or C(ovs). With C(auto), an existing bridge keeps its type, and a missing one is created
        only if its name starts with C(br) (Linux) or C(ovs) (Open vSwitch), as C(pipework) decides; any
        other missing name is an error, so a typo does not create a new, isolated bridge.
    type: str
    choices: [auto, linux, ovs]
    default: auto
  datapath_type:
    description:
      - Datapath of an Open vSwitch bridge the module creates; an existing bridge keeps its own.
      - C(netdev) is the userspace datapath (no kernel module needed).
    type: str
    choices: [system, netdev]
    default: system
  state:
    description:
      - C(present) - the uplink is a port of the bridge and its addressing is on the bridge.
      - C(absent) - everything is back on the uplink as the snapshot recorded it, and the uplink is not a
        port of the bridge. Cancels a revert that is still armed.
    type: str
    choices: [present, absent]
    default: present
  rollback_timeout:
    description:
      - Seconds from arming the revert (just before the change, so the change and the probe count too) until
        it restores the uplink, unless O(confirm=true) came first.
      - It must cover reconnecting and confirming. A play that confirms with C(meta reset_connection),
        C(wait_for_connection) and this module with O(confirm=true) should give C(wait_for_connection)
        a C(timeout) well below this value (the collection's roles use O(rollback_timeout) minus 30).
        If C(wait_for_connection) outlasts the revert, the confirmation fails loudly and the host is back
        on its original addressing.
      - C(0) arms no revert at all (the change is final at once); only for hosts with console access.
    type: int
    default: 120
  probe:
    description:
      - An address the host must reach through the new path right after the change (ICMP echo; an on-link
        address that answers ARP or neighbour discovery on the bridge counts as well).
      - Defaults to the default gateway of the uplink's routes (IPv4 first). When there is neither, there is
        no probe and the result carries a warning. An empty string disables the probe.
      - If it fails, the module reverts at once and fails with the reason.
    type: str
  probe_timeout:
    description:
      - Seconds the probe may take. On a Linux bridge with STP on it is at least the bridge's forwarding
        delay (twice C(forward_delay)) plus 5.
    type: int
    default: 10
  confirm:
    description:
      - Confirm the migration - cancel the armed revert and record the change as final. Run it over a NEW
        connection (after C(meta reset_connection) and C(wait_for_connection)), so that a change that cut
        the management path is never confirmed.
      - Confirming with nothing armed and the host migrated changes nothing. Confirming after the revert
        fired fails, and says when and why it fired. Confirming an incomplete migration fails and leaves the
        revert armed.
      - Only with O(state=present).
    type: bool
    default: false
  database_socket:
    description:
      - OVSDB to talk to, as C(ovs-vsctl --db) takes it. Defaults to C(unix:/var/run/openvswitch/db.sock).
      - The revert process uses the same socket.
    type: str
notes:
  - Addresses and routes the module moves live in the kernel only. After a reboot the host's own network
    configuration applies again; an Open vSwitch bridge and its ports persist in OVS's database, so a
    rebooted host can come up with the uplink in the bridge and its addresses on the uplink - run the
    migration again (or make the move permanent in the host's network configuration). The snapshot lives
    under C(/run) and is cleared by a reboot as well.
  - The revert process is a plain child of the module that detached itself (new session, double fork).
    With C(KillUserProcesses=yes) in logind's configuration, logind kills it when the SSH session ends; the
    default (C(no)) keeps it.
  - IPv6 addresses are added without duplicate address detection (C(nodad)), on the bridge and when they
    are restored, because they were in use by this host a moment before; C(ip addr) shows them as
    C(nodad).
  - Addresses with a lifetime (DHCP, SLAAC) move as permanent addresses; reconfigure the client that
    manages them for the bridge.
seealso:
  - module: netplumb.pipework.docker_veth
  - module: netplumb.pipework.ovs_vlan_port
  - module: ansible.builtin.wait_for_connection
'''

EXAMPLES = r'''
# Scenario S1: the host's address moves from enp0s3 to the Linux bridge br0, confirmed over a new
# connection. If the change had cut the SSH path, the host would revert by itself after 120 s.
- name: Bridge the uplink
  netplumb.pipework.host_bridge_migrate:
    uplink: enp0s3
    bridge: br0
    rollback_timeout: 120

- name: Reconnect over the migrated path
  ansible.builtin.meta: reset_connection

- name: Wait for the host on its address, now on br0
  ansible.builtin.wait_for_connection:
    timeout: 90

- name: Confirm (cancels the armed revert)
  netplumb.pipework.host_bridge_migrate:
    uplink: enp0s3
    bridge: br0
    confirm: true

# Scenario S3: eth0 into the Open vSwitch bridge ovs0, probing the gateway explicitly.
- name: Bridge eth0 into ovs0
  netplumb.pipework.host_bridge_migrate:
    uplink: eth0
    bridge: ovs0
    bridge_type: ovs
    probe: 10.10.101.254

# Userspace datapath (no openvswitch kernel module), for labs and containers.
- name: Bridge eth0 into a userspace OVS bridge
  netplumb.pipework.host_bridge_migrate:
    uplink: eth0
    bridge: ovs0
    datapath_type: netdev

- name: Undo - addresses, routes, MTU and MAC back on enp0s3; br0 stays, without enp0s3
  netplumb.pipework.host_bridge_migrate:
    uplink: enp0s3
    bridge: br0
    state: absent
'''

RETURN = r'''
uplink:
  description: The uplink.
  returned: always
  type: str
  sample: enp0s3
bridge:
  description: The bridge.
  returned: always
  type: str
  sample: br0
bridge_type:
  description: The bridge's type, as resolved from O(bridge_type).
  returned: always
  type: str
  sample: linux
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
actions:
  description: The changes made (or, in check mode, planned), in order. Empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: ["create Linux bridge br0 with MAC 08:00:27:aa:bb:cc and MTU 1500", "add address 192.168.1.102/24 to br0"]
addresses:
  description:
    - Global addresses of the bridge (O(state=present)) or of the uplink (O(state=absent)) after the run.
  returned: always
  type: list
  elements: str
  sample: ["192.168.1.102/24"]
routes:
  description: Routes through the bridge (O(state=present)) or the uplink (O(state=absent)) after the run.
  returned: always
  type: list
  elements: str
  sample: ["default via 192.168.1.1 dev br0"]
moved_addresses:
  description: Addresses this run added to the bridge (or, with O(state=absent), back to the uplink).
  returned: always
  type: list
  elements: str
  sample: ["192.168.1.102/24"]
moved_routes:
  description: Routes this run moved, as they are now.
  returned: always
  type: list
  elements: str
  sample: ["default via 192.168.1.1 dev br0"]
token:
  description: The token of the snapshot (and of the revert armed with it), or null when there is none.
  returned: always
  type: str
  sample: 3f1c9a0e5b7d4c2a8e6f0b1d2c3a4e5f
rollback:
  description: The commit-confirmed revert.
  returned: always
  type: dict
  contains:
    status:
      description:
        - C(armed) (waiting for confirmation), C(confirmed), C(unarmed) (O(rollback_timeout=0)),
          C(reverted), C(revert_failed), C(restored) (O(state=absent) ran), C(none) (no snapshot).
        - In check mode C(would_arm), C(would_confirm), C(would_restore) or C(disabled).
      type: str
      sample: armed
    token:
      description: Snapshot token.
      type: str
    pid:
      description: PID of the armed revert process.
      type: int
    timeout:
      description: The O(rollback_timeout) the revert was armed with.
      type: int
    deadline:
      description: When the armed revert fires (seconds since the epoch).
      type: float
    snapshot:
      description: Path of the snapshot record on the host.
      type: str
      sample: /run/netplumb-pipework/bridge_migrate/netns-4026531840.enp0s3.json
    reason:
      description: Why the revert fired, when it did.
      type: str
probe:
  description: The reachability check after the change.
  returned: always
  type: dict
  contains:
    address:
      description: The address probed.
      type: str
      sample: 192.168.1.1
    result:
      description: C(ok), C(failed) (the module reverted and failed), C(skipped) or C(not_run) (no change).
      type: str
      sample: ok
    detail:
      description: What answered, or why not.
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netplumb.pipework.plugins.module_utils.common.module_edge import run_and_exit
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate.apply import ARGUMENT_SPEC, Runner


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    runner = Runner(module.params, module.check_mode, module.run_command, module.get_bin_path)
    run_and_exit(module, runner)


if __name__ == '__main__':
    main()
