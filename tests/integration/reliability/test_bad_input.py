"""Issue 7, "Bad input and security": a table of invalid inputs to the four modules and the roles.

Every case must fail with a message that names the option and the value (``expect``: substrings of the
message), and must leave the host exactly as it was: links (with their ifindex), addresses, routes, ip rules,
``iptables-save``/``ip6tables-save`` minus counters, forwarding sysctls, the OVS rows of the test bridge
(and of any row named like a value of the case), docker_veth's attachment records and host_bridge_migrate's
snapshot/revert files (see relsnap.py).

The host is a throwaway network namespace H with an uplink (a veth to a "LAN" namespace, address and default
route), a Linux bridge, a non-veth interface, a veth pair of "another tool", Docker's iptables footprint, one
real docker_veth attachment (with its record) and one real nat_portmap mapping (with the collection's
chains), so there is something to break. The modules run inside H (``ip netns exec H ansible-playbook``);
OVS is the root OVS (its socket is a file, so the modules in H reach it) with a throwaway netdev bridge.

All cases run in ONE ansible-playbook: a callback plugin (callback_plugins/np_case_snapshots.py) snapshots
the host after each case from the controller process, between two tasks. A module case is one task with
ignore_errors; a role case is a block that includes the role with the bad variables, rescued, so a role's
argument_specs validation (or the module the role calls) refuses it. Each case is then one pytest test.

A case the collection gets wrong is marked xfail (strict: when the owner fixes it, the XPASS asks for the
marker to go) with the reason; the report in docs/reliability.md lists them with a reproduction.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import pytest

import relsnap
from nphelpers import REPO, VENV_BIN, ansible_env, run, suffix

HERE = os.path.dirname(os.path.abspath(__file__))
UPLINK = 'npup0'          # the host's "NIC": veth to the LAN namespace, 10.77.0.2/24, default via 10.77.0.1
BRIDGE = 'brnprel'        # a Linux bridge of the host, 10.78.0.1/24, with one real attachment
VICTIM = 'npvictim0'      # an interface that is not a veth (ifb)
FOREIGN = 'npfor0'        # a veth pair made by another tool (npfor0 <-> npfor1, both on the host)
SETUP_PORT = 18080        # published by the setup for the running container

DOCKER_BASELINE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -p tcp -m tcp --dport 2222 -m comment --comment "hand written" -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 172.17.0.2:80
COMMIT
"""

DV = 'netplumb.pipework.docker_veth'
OV = 'netplumb.pipework.ovs_vlan_port'
NP = 'netplumb.pipework.nat_portmap'
BM = 'netplumb.pipework.host_bridge_migrate'

# Placeholders filled in per run: {run} a running container, {stop} a stopped one, {ovs} the OVS test
# bridge, {netns} a netns target (a file under /run/netns).


def case(cid, module, args, expect, xfail=None):
    return {'id': cid, 'module': module, 'args': args, 'expect': expect, 'xfail': xfail}


def role(cid, name, variables, expect, xfail=None):
    return {'id': cid, 'role': name, 'vars': variables, 'expect': expect, 'xfail': xfail}


def _dv(**kw):
    args = {'container': '{run}', 'bridge': BRIDGE, 'ifname': 'eth2'}
    args.update(kw)
    return dict((k, v) for k, v in args.items() if v is not None)


CASES = [
    # ---------------------------------------------------------------- docker_veth
    case('dv_unknown_container', DV, _dv(container='npnosuch0rel', address=['10.78.0.9/24']),
         ['container', 'npnosuch0rel']),
    case('dv_stopped_container', DV, _dv(container='{stop}'), ['container', '{stop}', 'not running']),
    case('dv_bad_cidr', DV, _dv(address=['10.78.0.300/24']), ['address', '10.78.0.300/24']),
    case('dv_cidr_without_prefix', DV, _dv(address=['10.78.0.9']), ['address', '10.78.0.9']),
    case('dv_gateway_outside_subnet', DV, _dv(address=['10.78.0.9/24'], gateway='10.79.0.1'),
         ['gateway', '10.79.0.1']),
    case('dv_route_bad_dest', DV, _dv(routes=[{'dest': '10.1.0.0/40'}]), ['routes', '10.1.0.0/40']),
    case('dv_vlan_5000', DV, _dv(bridge='{ovs}', vlan=5000), ['vlan', '5000']),
    case('dv_vlan_on_existing_linux_bridge', DV, _dv(vlan=10), ['vlan', '10', BRIDGE]),
    case('dv_missing_bridge_not_br_or_ovs', DV, _dv(bridge='lanx0'), ['bridge', 'lanx0']),
    case('dv_bridge_option_like', DV, _dv(bridge='-br0'), ['bridge', "'-br0'"]),
    case('dv_bridge_is_not_a_bridge', DV, _dv(bridge=UPLINK), ['bridge', UPLINK, 'not a bridge']),
    case('dv_bridge_type_conflict', DV, _dv(bridge_type='ovs'), ['bridge_type', BRIDGE]),
    case('dv_datapath_type_option_like', DV, _dv(bridge='ovsnpnew0', datapath_type='-netdev'),
         ['datapath_type', "'-netdev'"]),
    case('dv_database_socket_option_like', DV, _dv(bridge='{ovs}', database_socket='-v'),
         ['database_socket', "'-v'"]),
    case('dv_ifname_16_bytes', DV, _dv(ifname='eth1234567890123'), ['ifname', 'eth1234567890123']),
    case('dv_ifname_slash', DV, _dv(ifname='eth/1'), ['ifname', "'eth/1'"]),
    case('dv_ifname_space', DV, _dv(ifname='eth 1'), ['ifname', "'eth 1'"]),
    case('dv_ifname_dot', DV, _dv(ifname='.'), ['ifname', "'.'"]),
    case('dv_ifname_dotdot', DV, _dv(ifname='..'), ['ifname', "'..'"]),
    case('dv_ifname_option_like', DV, _dv(ifname='-eth1'), ['ifname', "'-eth1'"]),
    case('dv_host_ifname_option_like', DV, _dv(host_ifname='-np0'), ['host_ifname', "'-np0'"]),
    case('dv_host_ifname_is_the_uplink', DV, _dv(host_ifname=UPLINK), ['host_ifname', UPLINK]),
    case('dv_host_ifname_is_not_a_veth', DV, _dv(host_ifname=VICTIM), ['host_ifname', VICTIM, 'not a veth']),
    case('dv_duplicate_host_ifname', DV,
         {'bridge': BRIDGE, 'attachments': [{'container': '{run}', 'ifname': 'eth2', 'host_ifname': 'npdup0'},
                                            {'container': '{run}', 'ifname': 'eth3', 'host_ifname': 'npdup0'}]},
         ['host_ifname', 'npdup0']),
    case('dv_mac_multicast', DV, _dv(mac='01:00:5e:00:00:01'), ['mac', '01:00:5e:00:00:01']),
    case('dv_mtu_too_small', DV, _dv(mtu=10), ['mtu', '10']),
    case('dv_netns_option_like', DV, {'netns': '-foo', 'bridge': BRIDGE}, ['netns', "'-foo'"]),
    case('dv_batch_fails_on_item_1', DV,
         {'bridge': BRIDGE, 'attachments': [{'container': '{run}', 'ifname': 'eth2', 'address': ['10.78.0.20/24']},
                                            {'container': 'npnosuch1rel', 'ifname': 'eth2'}]},
         ['attachments[1]', 'npnosuch1rel']),
    case('dv_batch_fails_late_on_missing_ovs_iface_bridge', DV,
         {'attachments': [{'container': '{run}', 'ifname': 'eth2', 'bridge': BRIDGE, 'address': ['10.78.0.21/24']},
                          {'container': '{run}', 'ifname': 'eth3', 'bridge': 'ovsnpnew1', 'datapath_type': 'system'}]},
         ['ovsnpnew1']),
    # ---------------------------------------------------------------- ovs_vlan_port
    case('ov_tag_5000', OV, {'port': 'npovp0', 'bridge': '{ovs}', 'tag': 5000}, ['tag', '5000']),
    case('ov_trunks_4095', OV, {'port': 'npovp0', 'bridge': '{ovs}', 'trunks': [10, 4095]}, ['trunks', '4095']),
    case('ov_vlan_mode_unknown', OV, {'port': 'npovp0', 'bridge': '{ovs}', 'vlan_mode': 'hybrid'},
         ['vlan_mode', 'hybrid']),
    case('ov_tag_with_vlan_mode_trunk', OV, {'port': 'npovp0', 'bridge': '{ovs}', 'tag': 10, 'vlan_mode': 'trunk'},
         ['tag', '10', 'trunk']),
    case('ov_port_option_like', OV, {'port': '-npovp0', 'bridge': '{ovs}', 'tag': 10}, ['port', "'-npovp0'"]),
    case('ov_bridge_option_like', OV, {'port': 'npovp0', 'bridge': '-ovs0', 'tag': 10}, ['bridge', "'-ovs0'"]),
    case('ov_datapath_type_option_like', OV, {'port': 'npovp0', 'bridge': 'ovsnpnew2', 'datapath_type': '--may-exist'},
         ['datapath_type', "'--may-exist'"]),
    case('ov_database_socket_option_like', OV, {'port': 'npovp0', 'bridge': '{ovs}', 'database_socket': '-v'},
         ['database_socket', "'-v'"]),
    case('ov_missing_bridge_not_ovs_name', OV, {'port': 'npovp0', 'bridge': 'lanx1'}, ['bridge', 'lanx1']),
    case('ov_port_not_on_any_bridge', OV, {'port': 'npovp0', 'tag': 10}, ['port', 'npovp0']),
    case('ov_add_port_without_interface', OV, {'port': 'npnoiface0', 'bridge': '{ovs}', 'tag': 10}, ['npnoiface0']),
    case('ov_duplicate_port', OV, {'bridge': '{ovs}', 'ports': [{'port': 'npovp0'}, {'port': 'npovp0'}]},
         ['port', 'npovp0']),
    # ---------------------------------------------------------------- nat_portmap
    case('np_host_port_0', NP, {'container': '{run}', 'publish': ['0:80']}, ['publish', "'0:80'"]),
    case('np_host_port_70000', NP, {'container': '{run}', 'publish': ['70000:80']}, ['publish', '70000:80']),
    case('np_host_ip_1_2_3', NP, {'container': '{run}', 'publish': ['1.2.3:80:80']}, ['publish', '1.2.3:80:80']),
    case('np_unknown_protocol', NP, {'container': '{run}', 'publish': ['8080:80/icmp']}, ['publish', 'icmp']),
    case('np_mismatched_ranges', NP, {'container': '{run}', 'publish': ['8000-8002:80-81']},
         ['publish', '8000-8002:80-81']),
    case('np_loopback_without_localhost', NP, {'container': '{run}', 'publish': ['127.0.0.1:8080:80']},
         ['publish', '127.0.0.1:8080:80', 'localhost']),
    case('np_same_host_port_twice', NP, {'container': '{run}', 'publish': ['8080:80', '8080:81']},
         ['publish', '8080']),
    case('np_host_port_of_another_target', NP, {'destination': '10.78.0.50', 'publish': ['%d:80' % SETUP_PORT]},
         [str(SETUP_PORT), '{run}']),
    case('np_host_port_forwarded_by_docker', NP, {'container': '{run}', 'publish': ['9090:80']}, ['9090']),
    case('np_unknown_container', NP, {'container': 'npnosuch2rel', 'publish': ['8080:80']},
         ['container', 'npnosuch2rel']),
    case('np_stopped_container', NP, {'container': '{stop}', 'publish': ['8080:80']},
         ['container', '{stop}', 'not running']),
    case('np_container_without_that_interface', NP, {'container': '{run}', 'ifname': 'eth7', 'publish': ['8080:80']},
         ['eth7', '{run}']),
    case('np_ifname_option_like', NP, {'container': '{run}', 'ifname': '-eth1', 'publish': ['8080:80']},
         ['ifname', "'-eth1'"]),
    case('np_destination_not_an_ip', NP, {'destination': '10.0.0.300', 'publish': ['8080:80']},
         ['destination', '10.0.0.300']),
    case('np_masquerade_without_bridge', NP, {'masquerade': ['10.78.0.0/24']}, ['masquerade', 'bridge']),
    case('np_bridge_option_like', NP, {'masquerade': ['10.78.0.0/24'], 'bridge': '-br0'}, ['bridge', "'-br0'"]),
    # ---------------------------------------------------------------- host_bridge_migrate
    case('bm_missing_uplink', BM, {'uplink': 'npnoup0', 'bridge': 'brnpm0'}, ['uplink', 'npnoup0']),
    case('bm_uplink_is_the_bridge', BM, {'uplink': UPLINK, 'bridge': UPLINK}, ['bridge', UPLINK]),
    case('bm_rollback_timeout_negative', BM, {'uplink': UPLINK, 'bridge': 'brnpm0', 'rollback_timeout': -5},
         ['rollback_timeout', '-5']),
    case('bm_rollback_timeout_not_a_number', BM, {'uplink': UPLINK, 'bridge': 'brnpm0', 'rollback_timeout': 'soon'},
         ['rollback_timeout', 'soon']),
    case('bm_uplink_option_like', BM, {'uplink': '-eth0', 'bridge': 'brnpm0'}, ['uplink', "'-eth0'"]),
    case('bm_bridge_option_like', BM, {'uplink': UPLINK, 'bridge': '-br0'}, ['bridge', "'-br0'"]),
    case('bm_missing_bridge_not_br_or_ovs', BM, {'uplink': UPLINK, 'bridge': 'lanx2'}, ['bridge', 'lanx2']),
    case('bm_bridge_is_not_a_bridge', BM, {'uplink': UPLINK, 'bridge': VICTIM}, ['bridge', VICTIM]),
    case('bm_uplink_is_a_bridge', BM, {'uplink': BRIDGE, 'bridge': 'brnpm0'}, ['uplink', BRIDGE]),
    case('bm_database_socket_option_like', BM, {'uplink': UPLINK, 'bridge': 'ovsnpm0', 'database_socket': '--db'},
         ['database_socket', "'--db'"]),
    case('bm_confirm_with_state_absent', BM, {'uplink': UPLINK, 'bridge': 'brnpm0', 'confirm': True, 'state': 'absent'},
         ['confirm', 'absent']),
    # ---------------------------------------------------------------- roles (argument_specs, then the modules)
    role('ro_ovs_vlan_state_unknown', 'ovs_vlan', {'ovs_vlan_state': 'gone'}, ['ovs_vlan_state', 'gone']),
    role('ro_ovs_vlan_container_missing', 'ovs_vlan', {'ovs_vlan_containers': [{'address': '10.0.0.1/24'}]},
         ['container', 'ovs_vlan_containers']),
    role('ro_ovs_vlan_vlan_not_an_int', 'ovs_vlan', {'ovs_vlan_containers': [{'container': '{run}', 'vlan': 'ten'}]},
         ['vlan', 'ten']),
    role('ro_ovs_vlan_unknown_key', 'ovs_vlan', {'ovs_vlan_containers': [{'container': '{run}', 'colour': 'red'}]},
         ['colour']),
    role('ro_ovs_vlan_remove_bridge_not_bool', 'ovs_vlan', {'ovs_vlan_remove_bridge': 'maybe'},
         ['ovs_vlan_remove_bridge', 'maybe']),
    role('ro_ovs_vlan_vlan_5000', 'ovs_vlan', {'ovs_vlan_bridge': '{ovs}', 'ovs_vlan_datapath_type': 'netdev',
                                               'ovs_vlan_containers': [{'container': '{run}', 'ifname': 'eth2',
                                                                        'vlan': 5000}]},
         ['vlan', '5000']),
    role('ro_ovs_vlan_bridge_option_like', 'ovs_vlan',
         {'ovs_vlan_bridge': '-ovs0', 'ovs_vlan_containers': [{'container': '{run}', 'ifname': 'eth2'}]},
         ['bridge', "'-ovs0'"]),
    role('ro_ovs_vlan_datapath_type_option_like', 'ovs_vlan',
         {'ovs_vlan_bridge': 'ovsnpnew3', 'ovs_vlan_datapath_type': '--help',
          'ovs_vlan_containers': [{'container': '{run}', 'ifname': 'eth2'}]},
         ['datapath_type', "'--help'"]),
    role('ro_lan_bridge_state_unknown', 'lan_bridge', {'lan_bridge_state': 'gone'}, ['lan_bridge_state', 'gone']),
    role('ro_lan_bridge_rollback_timeout_not_an_int', 'lan_bridge', {'lan_bridge_rollback_timeout': 'soon'},
         ['lan_bridge_rollback_timeout', 'soon']),
    role('ro_lan_bridge_container_missing', 'lan_bridge', {'lan_bridge_containers': [{'address': '10.77.0.9/24'}]},
         ['container', 'lan_bridge_containers']),
    role('ro_lan_bridge_uplink_option_like', 'lan_bridge', {'lan_bridge_uplink': '-eth0', 'lan_bridge_bridge': 'brnplan0'},
         ['uplink', "'-eth0'"]),
    role('ro_multihost_vlan_datapath_type_unknown', 'multihost_vlan', {'multihost_vlan_datapath_type': 'kernel'},
         ['multihost_vlan_datapath_type', 'kernel']),
    role('ro_multihost_vlan_probe_timeout_not_an_int', 'multihost_vlan', {'multihost_vlan_probe_timeout': 'x'},
         ['multihost_vlan_probe_timeout', "'x'"]),
    role('ro_multihost_vlan_mtu_not_an_int', 'multihost_vlan',
         {'multihost_vlan_containers': [{'container': '{run}', 'mtu': 'big'}]}, ['mtu', 'big']),
    role('ro_multihost_vlan_bridge_option_like', 'multihost_vlan',
         {'multihost_vlan_uplink': UPLINK, 'multihost_vlan_bridge': '-ovs0'}, ['bridge', "'-ovs0'"]),
    role('ro_port_publish_address_missing', 'port_publish', {'port_publish_containers': [{'container': '{run}'}]},
         ['address', 'port_publish_containers']),
    role('ro_port_publish_state_unknown', 'port_publish', {'port_publish_state': 'gone'}, ['port_publish_state', 'gone']),
    role('ro_port_publish_bridge_address_without_prefix', 'port_publish',
         {'port_publish_bridge': 'brnppub0', 'port_publish_bridge_address': '10.79.0.1', 'port_publish_ifname': 'eth5',
          'port_publish_containers': [{'container': '{run}', 'address': '10.79.0.2/24'}]},
         ['bridge_address', '10.79.0.1']),
    role('ro_persistence_log_level_unknown', 'persistence', {'persistence_log_level': 'loud'},
         ['persistence_log_level', 'loud']),
    role('ro_persistence_interval_not_an_int', 'persistence', {'persistence_interval': 'often'},
         ['persistence_interval', 'often']),
    role('ro_prerequisites_nat_not_bool', 'prerequisites', {'prerequisites_nat': 'maybe'},
         ['prerequisites_nat', 'maybe']),
    # ---------------------------------------------------------------- last: cases that may break the host
    # port_publish with a bad publish spec and a bridge that does not exist yet: refused before docker_veth
    # wires anything (no bridge, veth or record), with nat_portmap's own message
    role('ro_port_publish_bad_spec_after_wiring', 'port_publish',
         {'port_publish_bridge': 'brnppub0', 'port_publish_bridge_address': '10.79.0.1/24', 'port_publish_ifname': 'eth5',
          'port_publish_containers': [{'container': '{run}', 'address': '10.79.0.2/24', 'publish': ['70000:80']}]},
         ['publish', '70000:80']),
    role('ro_port_publish_unknown_protocol', 'port_publish',
         {'port_publish_bridge': 'brnppub0', 'port_publish_bridge_address': '10.79.0.1/24', 'port_publish_ifname': 'eth5',
          'port_publish_containers': [{'container': '{run}', 'address': '10.79.0.2/24', 'publish': ['8080:80/icmp']}]},
         ['publish', '8080:80/icmp', 'icmp']),
    role('ro_port_publish_host_ip_not_an_ip', 'port_publish',
         {'port_publish_bridge': 'brnppub0', 'port_publish_bridge_address': '10.79.0.1/24', 'port_publish_ifname': 'eth5',
          'port_publish_containers': [{'container': '{run}', 'address': '10.79.0.2/24', 'publish': ['1.2.3:80:80']}]},
         ['publish', '1.2.3:80:80']),
    case('dv_absent_host_ifname_not_a_veth', DV, {'netns': '{netns}', 'host_ifname': VICTIM, 'state': 'absent'},
         ['host_ifname', VICTIM]),
    case('dv_absent_host_ifname_foreign_veth', DV,
         {'container': '{run}', 'ifname': 'eth9', 'host_ifname': FOREIGN, 'state': 'absent'},
         ['host_ifname', FOREIGN]),
]


def fill(value, names):
    if isinstance(value, str):
        for key, real in names.items():
            value = value.replace('{%s}' % key, real)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return dict((k, fill(v, names)) for k, v in value.items())
    return value


def strings_of(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings_of(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_of(v)


def ns(name, *argv, check=True):
    return run(['ip', 'netns', 'exec', name] + list(argv), check=check)


def build_playbook(cases, world):
    tasks = [
        {'name': 'setup: a real attachment (with its record) to the Linux bridge',
         DV: {'container': world['run'], 'bridge': BRIDGE, 'ifname': 'eth1', 'address': ['10.78.0.2/24']}},
        {'name': 'setup: a real published port (with the collection\'s chains)',
         NP: {'container': world['run'], 'publish': ['%d:80' % SETUP_PORT], 'masquerade': ['10.78.0.0/24'],
              'bridge': BRIDGE}},
        {'name': 'baseline', 'ansible.builtin.debug': {'msg': 'baseline'}},
    ]
    for c in cases:
        if 'module' in c:
            tasks.append({'name': 'case:%s' % c['id'], c['module']: fill(c['args'], world), 'ignore_errors': True})
        else:
            tasks.append({'name': 'role %s' % c['id'], 'block': [
                {'name': 'case:%s' % c['id'], 'ansible.builtin.include_role': {'name': 'netplumb.pipework.' + c['role']},
                 'vars': fill(c['vars'], world)},
            ], 'rescue': [{'name': 'refused', 'ansible.builtin.meta': 'noop'}]})
    return [{'hosts': 'localhost', 'gather_facts': False, 'environment': {'NETPLUMB_STATE_DIR': world['state_dir']},
             'tasks': tasks}]


class World:
    """The throwaway host namespace and everything around it."""

    def __init__(self, containers):
        self.sfx = suffix()
        self.host = 'nprelH' + self.sfx
        self.lan = 'nprelL' + self.sfx
        self.target = 'nprelT' + self.sfx
        self.ovs = 'ovsnp' + self.sfx
        self.containers = containers
        self.state_dir = tempfile.mkdtemp(prefix='np-rel-state-')
        self.names = {}

    def up(self):
        h = self.host
        for name in (self.host, self.lan, self.target):
            run(['ip', 'netns', 'add', name])
        # No duplicate address detection: IPv6 link-local addresses are final at once (no 'tentative' flag
        # that would change between two snapshots).
        for key in ('all', 'default'):
            ns(h, 'sysctl', '-qw', 'net.ipv6.conf.%s.accept_dad=0' % key)
        ns(h, 'ip', 'link', 'set', 'lo', 'up')
        ns(h, 'ip', 'link', 'add', UPLINK, 'type', 'veth', 'peer', 'name', 'lan0')
        ns(h, 'ip', 'link', 'set', 'lan0', 'netns', self.lan)
        ns(h, 'ip', 'addr', 'add', '10.77.0.2/24', 'dev', UPLINK)
        ns(h, 'ip', 'link', 'set', UPLINK, 'up')
        ns(self.lan, 'ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'lan0')
        ns(self.lan, 'ip', 'link', 'set', 'lan0', 'up')
        ns(h, 'ip', 'route', 'add', 'default', 'via', '10.77.0.1')
        ns(h, 'ip', 'link', 'add', BRIDGE, 'type', 'bridge')
        ns(h, 'ip', 'addr', 'add', '10.78.0.1/24', 'dev', BRIDGE)
        ns(h, 'ip', 'link', 'set', BRIDGE, 'up')
        ns(h, 'ip', 'link', 'add', VICTIM, 'type', 'ifb')
        ns(h, 'ip', 'link', 'add', FOREIGN, 'type', 'veth', 'peer', 'name', 'npfor1')
        subprocess.run(['ip', 'netns', 'exec', h, 'iptables-restore'], input=DOCKER_BASELINE, text=True,
                       check=True, capture_output=True)
        run(['ovs-vsctl', '--timeout=10', 'add-br', self.ovs, '--', 'set', 'Bridge', self.ovs, 'datapath_type=netdev'])
        self.run_name = self.containers.start('nprel%s-run' % self.sfx)
        self.stop_name = self.containers.start('nprel%s-stop' % self.sfx)
        run(['docker', 'stop', '-t', '0', self.stop_name])
        self.names = {'run': self.run_name, 'stop': self.stop_name, 'ovs': self.ovs, 'netns': self.target,
                      'state_dir': self.state_dir}

    def down(self):
        for name in (self.host, self.lan, self.target):
            run(['ip', 'netns', 'del', name], check=False)
        run(['ovs-vsctl', '--timeout=10', '--if-exists', 'del-br', self.ovs], check=False)
        for extra in ('ovsnpnew0', 'ovsnpnew1', 'ovsnpnew2', 'ovsnpnew3', 'ovsnpm0'):
            # Only bridges a wrongly accepted case could have created (names no other test uses).
            run(['ovs-vsctl', '--timeout=10', '--if-exists', 'del-br', extra], check=False)
        for root, dirs, files in os.walk(self.state_dir, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(self.state_dir)


@pytest.fixture(scope='module')
def outcome():
    """Run every case in one playbook inside the host namespace; return the callback's record."""
    from nphelpers import Containers
    containers = Containers()
    world = World(containers)
    workdir = tempfile.mkdtemp(prefix='np-rel-bad-')
    with relsnap.sigterm_raises():
        try:
            world.up()
            names = world.names
            play = build_playbook(CASES, names)
            play_path = os.path.join(workdir, 'bad_input.yml')
            with open(play_path, 'w') as f:
                json.dump(play, f, indent=1)
            out_path = os.path.join(workdir, 'cases.json')
            watch = set([world.ovs])
            for c in CASES:
                watch.update(strings_of(fill(c.get('args') or c.get('vars'), names)))
            env = ansible_env()
            env.update({
                'NP_CASES_OUT': out_path,
                'NP_SNAP_BRIDGE': world.ovs,
                'NP_SNAP_WATCH': json.dumps(sorted(watch)),
                'NETPLUMB_STATE_DIR': world.state_dir,
                'ANSIBLE_CALLBACK_PLUGINS': os.path.join(HERE, 'callback_plugins'),
                'ANSIBLE_CALLBACKS_ENABLED': 'np_case_snapshots',
                'ANSIBLE_STDOUT_CALLBACK': 'default',
            })
            started = time.monotonic()
            proc = subprocess.run(['ip', 'netns', 'exec', world.host, os.path.join(VENV_BIN, 'ansible-playbook'),
                                   '-i', 'localhost,', '-c', 'local', play_path],
                                  capture_output=True, text=True, env=env, cwd=REPO, check=False)
            wall = time.monotonic() - started
            try:
                with open(out_path) as f:
                    data = json.load(f)
            except (IOError, ValueError):
                raise AssertionError('the playbook left no case record:\n%s\n%s' % (proc.stdout[-5000:], proc.stderr[-3000:]))
            data['wall_seconds'] = round(wall, 1)
            data['names'] = names
            data['stdout_tail'] = proc.stdout[-3000:]
            results_dir = os.path.join(REPO, 'bench', 'results')
            os.makedirs(results_dir, exist_ok=True)
            with open(os.path.join(results_dir, 'bad_input_cases.json'), 'w') as f:
                json.dump(data, f)  # every case's results and snapshots, to look into a failure afterwards
            print('\nbad input: %d cases in one playbook, %.1f s' % (len(data['order']), wall))
            yield data
        finally:
            world.down()
            containers.cleanup()
            for name in os.listdir(workdir):
                os.unlink(os.path.join(workdir, name))
            os.rmdir(workdir)


def test_table_size_and_setup(outcome):
    """At least 40 bad inputs, spread over the four modules and the roles; the setup really worked."""
    assert not outcome['setup'], outcome['setup']
    assert outcome['baseline'] is not None, outcome['stdout_tail']
    kinds = {}
    for c in CASES:
        kinds[c.get('module') or 'role'] = kinds.get(c.get('module') or 'role', 0) + 1
    assert len(CASES) >= 40 and len(kinds) == 5 and min(kinds.values()) >= 5, kinds
    assert len(set(c['id'] for c in CASES)) == len(CASES)
    assert outcome['order'] == [c['id'] for c in CASES], 'the playbook stopped early:\n' + outcome['stdout_tail']
    base = outcome['baseline']
    assert any(link['ifname'] == BRIDGE for link in base['links'])
    assert base['records'], 'the setup attachment left no record in %s' % outcome['names']['state_dir']
    assert any('NETPLUMB-DNAT' in line for line in base['iptables']), 'the setup mapping left no chain'
    assert base['ovs']['Bridge'], 'the OVS test bridge is missing from the snapshot'


def _before(outcome, cid):
    order = outcome['order']
    i = order.index(cid)
    return outcome['baseline'] if i == 0 else outcome['cases'][order[i - 1]]['after']


@pytest.mark.parametrize('spec', [pytest.param(c, id=c['id'], marks=[pytest.mark.xfail(reason=c['xfail'], strict=True)]
                                               if c['xfail'] else []) for c in CASES])
def test_bad_input_refused_host_unchanged(spec, outcome):
    cid = spec['id']
    assert cid in outcome['cases'], 'case %s did not run:\n%s' % (cid, outcome['stdout_tail'])
    got = outcome['cases'][cid]
    failures = [r for r in got['results'] if r['status'] == 'failed']
    assert failures, 'accepted: %s %s -> %s' % (spec.get('module') or spec.get('role'),
                                                json.dumps(fill(spec.get('args') or spec.get('vars'), outcome['names'])),
                                                got['results'])
    msg = failures[0]['msg'] + ' ' + ' '.join(failures[0].get('argument_errors') or [])
    missing = [s for s in fill(spec['expect'], outcome['names']) if s not in msg]
    assert not missing, 'the message lacks %s: %s' % (missing, msg)
    assert 'after' in got, 'no snapshot after the case'
    changes = relsnap.diff(_before(outcome, cid), got['after'])
    assert not changes, 'the host changed: %s (message: %s)' % (changes, msg)


def test_report_counts(outcome):
    """Counts for docs/reliability.md and the README (printed; no assertion on duration)."""
    counts = {}
    for c in CASES:
        key = c.get('module', 'roles').split('.')[-1] if 'module' in c else 'roles'
        counts[key] = counts.get(key, 0) + 1
    xfails = [c['id'] for c in CASES if c['xfail']]
    report = {'bad_inputs': len(CASES), 'per_module': counts, 'known_bugs_xfail': xfails,
              'playbook_seconds': outcome['wall_seconds']}
    results_dir = os.path.join(REPO, 'bench', 'results')
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, 'bad_input.json'), 'w') as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print('\nbad input report: %s' % json.dumps(report, sort_keys=True))
    assert report['bad_inputs'] >= 40
