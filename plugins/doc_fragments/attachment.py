# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Paired one-to-one with module_utils/veth_spec.py ITEM_OPTIONS.
    DOCUMENTATION = r'''
options:
  container:
    description:
      - Docker container name or ID, resolved with the Docker SDK to its PID and network namespace.
      - Exactly one of O(container), O(netns), O(pid) (or O(attachments)).
    type: str
  netns:
    description:
      - A network namespace name under C(/run/netns), or an absolute path to a namespace file.
    type: str
  pid:
    description:
      - A process whose network namespace receives the container end.
    type: int
  bridge:
    description:
      - Bridge for the host end. Required with O(state=present).
    type: str
  bridge_type:
    description:
      - V(auto) keeps the type of an existing bridge; a missing bridge is created only when its name starts
        with C(br) (Linux) or C(ovs) (Open vSwitch), as pipework does. Any other missing name is an error,
        so a typo never creates an isolated bridge.
      - V(linux) or V(ovs) create a missing bridge of that type whatever its name.
      - An existing interface that is not a bridge is always an error.
      - Defaults to V(auto).
    type: str
    choices: [auto, linux, ovs]
  datapath_type:
    description:
      - C(datapath_type) of a new OVS bridge; V(netdev) is the userspace datapath.
      - Defaults to V(system) (the kernel datapath, as on real hosts).
      - When set, an existing OVS bridge with another datapath type is an error.
    type: str
  bridge_address:
    description:
      - The host's own address on the bridge in CIDR form, the gateway its containers use (as docker0 has
        172.17.0.1/16). Added if missing; other addresses of the bridge are left alone.
    type: str
  ifname:
    description:
      - Interface name inside the container. Defaults to C(eth1).
      - 1-15 bytes, no C(/), C(:) or white space, not starting with C(-).
    type: str
  host_ifname:
    description:
      - Host-side interface name (and OVS port name).
      - Default derived from the target's identity and O(ifname) (C(np) and 11 hex digits), stable across
        runs, unique, at most 15 characters.
    type: str
  address:
    description:
      - Addresses (IPv4 and IPv6, CIDR form) of the container interface. The list is exact, and addresses of
        this interface that are not listed are removed (the module owns the interface).
      - V([]) removes every address; unset leaves them as they are.
    type: list
    elements: str
  gateway:
    description:
      - The container's default route (of the gateway's family) via this interface. Must lie in the subnet
        of one of O(address).
      - If another default route exists it is replaced, and the old one is returned in
        RV(attachments[].replaced_default_routes).
      - V('') removes default routes through this interface; unset leaves routes as they are.
    type: str
  routes:
    description:
      - Extra routes through this interface, exact list (V([]) removes them all). Connected routes and the
        default route (see O(gateway)) are not part of this list.
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
    description: MAC address of the container end.
    type: str
  mtu:
    description: MTU of both ends of the pair.
    type: int
  vlan:
    description:
      - OVS access tag, 1-4094. V(0) removes the tag. Only with Open vSwitch bridges.
    type: int
    aliases: [tag]
  state:
    description:
      - V(present) creates or corrects the attachment.
      - V(absent) removes the pair and its OVS port (never the bridge). For a container that no longer
        exists it succeeds and purges what is left of it (stale OVS ports, host veth).
      - Defaults to V(present).
    type: str
    choices: [present, absent]
'''
