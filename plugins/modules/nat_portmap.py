#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: nat_portmap
short_description: Publish container ports Docker-style (DNAT) and masquerade container subnets
version_added: 0.1.0
description:
  - Gives containers attached with M(netplumb.pipework.docker_veth) (which have no Docker-managed C(-p))
    the semantics of C(docker run -p) and C(-P), and the outbound MASQUERADE of a Docker bridge.
  - The collection owns its chains (nat C(NETPLUMB-DNAT), C(NETPLUMB-LOCALHOST), C(NETPLUMB-MASQ); filter
    C(NETPLUMB-FORWARD), C(NETPLUMB-INPUT)) and rewrites them with ONE C(iptables-restore --noflush) per run
    (and one C(ip6tables-restore) for IPv6). Jumps from the built-in chains are added once, never duplicated.
    Docker's chains and the user's own rules are left untouched.
  - Every rule carries a comment naming its target (C(netplumb/target=NAME)); the state lives in the rules,
    so the module reports and prunes what it owns by reading C(iptables-save).
  - Mappings belong to the target's name. A container recreated under the same name takes its mappings
    over; a host port published for another name is an error naming both; a host port bound by a local
    process, or forwarded by a rule outside the collection (Docker's C(DOCKER) chain), is an error too.
  - A spec without a host port gets the lowest free port of C(net.ipv4.ip_local_port_range) (skipping
    mapped and bound ports) and keeps it on re-runs.
  - Hairpin works, a container reaches its own or a neighbour's published port through a host address. The
    module masquerades DNATed traffic from the container's subnet and turns on hairpin mode on the
    container's Linux bridge port (br_netfilter bridges a DNAT back onto the bridge).
  - Removing, adding or changing a UDP mapping flushes the conntrack entries of that host port, so a flow
    does not keep its old NAT decision.
  - Publishing turns on IPv4 (or IPv6) forwarding, as Docker does, and says so. Forwarded traffic of the
    published ports and of the masqueraded bridges is accepted by rules in C(NETPLUMB-FORWARD), jumped from
    C(DOCKER-USER) when it exists, else from C(FORWARD), so it works under Docker's FORWARD policy of DROP.
  - Runs under the collection's host-level lock, so concurrent runs against one host take turns.
author:
  - netplumb.pipework developers (@netplumb)
requirements:
  - iptables (C(iptables-save), C(iptables-restore)); ip6tables for IPv6
  - conntrack (conntrack-tools) to flush UDP flows
  - pyroute2 0.7 or later and the Docker SDK for Python on the target host, for O(container) targets
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  container:
    description:
      - Docker container name or ID; the mapping points at its first global address on O(ifname).
      - Its name is the handle the mappings belong to.
      - Exactly one of O(container) or O(destination) (or O(targets)).
    type: str
  destination:
    description:
      - A fixed IP address to forward to, instead of a container. Its handle is the address.
      - As C(address/prefix) (for example C(172.30.0.5/16)), hairpin masquerade covers that subnet;
        a bare address covers only itself.
    type: str
  ifname:
    description:
      - The container interface whose address the mappings point at. Defaults to C(eth1), the interface
        M(netplumb.pipework.docker_veth) creates.
    type: str
  publish:
    description:
      - Docker C(-p) specs, C(ip:hostPort:containerPort), C(ip::containerPort), C(hostPort:containerPort),
        C(containerPort) (a free host port, like C(-P)), port ranges such as C(8000-8002:80-82) (mapped port
        by port; both ranges must have the same length), each with an optional C(/tcp), C(/udp) or C(/sctp).
      - IPv6 host addresses go in brackets, C([2001:db8::1]:8080:80); C(0.0.0.0) and C([::]) mean every
        address of that family; no host address means every address of the families in O(ip_version).
      - A loopback host address (C(127.0.0.1:8080:80)) answers on that address only and needs O(localhost).
      - With O(state=absent), the specs to remove (a spec without a host port removes the mapping of that
        container port); none removes every mapping of the target.
    type: list
    elements: str
  localhost:
    description:
      - Also answer on C(127.0.0.1:hostPort) from the host itself (IPv4, mappings on every address).
      - This turns on C(net.ipv4.conf.IFACE.route_localnet) on the interface toward the container, which on
        its own would expose the host's loopback-only services to its neighbours (CVE-2020-8558); the module
        therefore also installs a rule that drops 127.0.0.0/8 arriving from outside, and says so.
      - Defaults to V(false).
    type: bool
  exclusive:
    description:
      - Remove this target's mappings that are not listed in O(publish).
      - Defaults to V(false) (other mappings of the target are kept).
    type: bool
  ip_version:
    description:
      - Families to publish specs without a host address in, and to read the container's addresses for.
      - Defaults to V(ipv4).
    type: str
    choices: [ipv4, ipv6, both]
  state:
    description:
      - V(present) publishes; V(absent) removes the listed mappings (all of the target's without O(publish)),
        and the listed O(masquerade) entries.
      - Defaults to V(present).
    type: str
    choices: [present, absent]
  targets:
    description:
      - Many targets in one run (one restore for all). Each item takes the target keys below; top-level
        values are defaults for every item.
      - Mutually exclusive with a top-level O(container) or O(destination).
    type: list
    elements: dict
    suboptions:
      container:
        description: See the top-level O(container).
        type: str
      destination:
        description: See the top-level O(destination).
        type: str
      ifname:
        description: See the top-level O(ifname).
        type: str
      publish:
        description: See the top-level O(publish).
        type: list
        elements: str
      localhost:
        description: See the top-level O(localhost).
        type: bool
      exclusive:
        description: See the top-level O(exclusive).
        type: bool
      ip_version:
        description: See the top-level O(ip_version).
        type: str
        choices: [ipv4, ipv6, both]
      state:
        description: See the top-level O(state).
        type: str
        choices: [present, absent]
  masquerade:
    description:
      - Source networks (CIDR) masqueraded when leaving through any interface other than O(bridge), the
        article's C(-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE). Forwarded traffic of that bridge (outbound,
        replies, and container to container, which br_netfilter sends through FORWARD) is accepted.
      - Entries are keyed by (network, bridge) and shared by all targets; only O(state=absent) with the entry
        listed removes one.
    type: list
    elements: str
  bridge:
    description:
      - The bridge the masqueraded networks sit behind. Required with O(masquerade).
    type: str
  isolate:
    description:
      - V(true) drops forwarded traffic that neither enters nor leaves the collection's bridges (those of
        O(masquerade) entries, O(bridge) and the bridges of container targets), so that turning forwarding
        on does not make the host a router between all its interfaces. V(false) removes that rule.
      - On a Docker host this also drops Docker's own forwarded traffic unless its bridges are among them.
      - Left unset, isolation stays as it is.
    type: bool
  docker_host:
    description:
      - Docker daemon URL for the Docker SDK, for example C(unix:///var/run/docker.sock).
      - Defaults to the SDK's default (C(DOCKER_HOST) or the standard socket).
    type: str
  timeout:
    description: Seconds to wait for Docker.
    type: int
    default: 30
notes:
  - Rules live in the kernel only. They survive neither a reboot nor an C(iptables) flush; run the playbook
    again (it puts back exactly what is missing, with the same ports).
  - Hairpin mode, C(route_localnet) and forwarding, once turned on, are left on when mappings are removed
    (other users may depend on them).
seealso:
  - module: netplumb.pipework.docker_veth
'''

EXAMPLES = r'''
- name: The article's -p formats for container web (attached on eth1 by docker_veth)
  netplumb.pipework.nat_portmap:
    container: web
    publish:
      - 192.168.1.102:8080:80      # ip:hostPort:containerPort
      - 192.168.1.102::81          # ip::containerPort, a free host port on that address
      - 8443:443                   # hostPort:containerPort, every address
      - "82"                       # containerPort, a free host port (-P)
      - 8000-8002:8000-8002        # a range, port by port
      - 5353:53/udp
  register: web_ports

- name: Show what `docker port web` would
  ansible.builtin.debug:
    msg: "{{ web_ports.mappings | map(attribute='host_port') | list }}"

- name: Masquerade the bridge subnet (docker0's -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE)
  netplumb.pipework.nat_portmap:
    masquerade: [172.30.0.0/16]
    bridge: br-web

- name: Many containers in one run, and 127.0.0.1 answers too
  netplumb.pipework.nat_portmap:
    localhost: true
    targets:
      - {container: web1, publish: ["8081:80"]}
      - {container: web2, publish: ["8082:80"], exclusive: true}
      - {destination: 172.30.0.9/16, publish: ["9000:9000/udp"]}

- name: Unpublish everything of web
  netplumb.pipework.nat_portmap:
    container: web
    state: absent
'''

RETURN = r'''
mappings:
  description: The mappings of the targets of this run after it (what C(docker port) shows), free ports resolved.
  returned: always
  type: list
  elements: dict
  contains:
    target:
      description: The handle the mapping belongs to (container name or destination address).
      type: str
      sample: web
    proto:
      description: C(tcp), C(udp) or C(sctp).
      type: str
      sample: tcp
    host_ip:
      description: Host address, C(0.0.0.0) or C(::) for every address.
      type: str
      sample: 0.0.0.0
    host_port:
      description: Host port.
      type: int
      sample: 32768
    container_ip:
      description: Address the traffic is forwarded to.
      type: str
      sample: 172.30.0.2
    container_port:
      description: Container port.
      type: int
      sample: 80
    localhost:
      description: Whether the mapping also (or only) answers on a loopback address.
      type: bool
    family:
      description: C(ipv4) or C(ipv6).
      type: str
masquerade:
  description: Every masquerade entry after the run (shared by all targets).
  returned: always
  type: list
  elements: dict
  contains:
    source:
      description: Masqueraded source network.
      type: str
      sample: 172.30.0.0/16
    bridge:
      description: Traffic leaving through this bridge is not masqueraded.
      type: str
      sample: br-web
isolate:
  description: Per family, the bridges whose traffic isolation lets through (absent when isolation is off).
  returned: always
  type: dict
changes:
  description: What the run changed (or would change in check mode), one line each.
  returned: always
  type: list
  elements: str
conntrack_flushed:
  description: UDP host ports whose conntrack entries were flushed.
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds spent inside the module (for benchmarks).
  returned: always
  type: float
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netplumb.pipework.plugins.module_utils.common.module_edge import run_and_exit
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.spec import ARGUMENT_SPEC
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.apply import Runner


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[('container', 'destination')],
                           required_by={'masquerade': 'bridge'})

    def run(argv, data=None):
        return module.run_command(argv, data=data, binary_data=data is not None)

    runner = Runner(module.params, module.check_mode, run, module.get_bin_path)
    run_and_exit(module, runner)


if __name__ == '__main__':
    main()
