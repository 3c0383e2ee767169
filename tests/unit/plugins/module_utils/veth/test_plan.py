"""docker_veth planning against fabricated kernel and OVS state (no I/O)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import NamespaceState
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.plan import (
    plan_absent, plan_bridges, plan_present, plan_purge)
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import ARGUMENT_SPEC, build_attachments


class FakeContainer:
    def __init__(self, cid, name):
        self.id = cid
        self.name = name
        self.pid = 42
        self.running = True


def want(**kwargs):
    params = dict((k, None) for k in ARGUMENT_SPEC)
    params.update(kwargs)
    (a,) = build_attachments(params)
    a.container = FakeContainer('c' * 64, kwargs.get('container', 'test1'))
    a.set_identity(a.container.id)
    return a


def link(index, name, kind=None, master=None, peer=None, mtu=1500, mac='02:00:00:00:00:01', up=True):
    return {'index': index, 'name': name, 'kind': kind, 'master': master, 'mtu': mtu, 'mac': mac,
            'peer': peer, 'up': up}


def addr(index, cidr):
    return {'index': index, 'address': ipaddress.ip_interface(cidr), 'scope': 0}


def route(oif, dst=None, gw=None, family=socket.AF_INET, proto=4):
    return {'family': family, 'dst': ipaddress.ip_network(dst) if dst else None,
            'gateway': ipaddress.ip_address(gw) if gw else None, 'oif': oif, 'table': 254, 'proto': proto,
            'scope': 0, 'type': 1, 'priority': None, 'prefsrc': None}


def ovs_state(bridges=(), ports=()):
    """bridges: names; ports: (bridge, name, tag, external_ids)."""
    b_rows, p_rows, i_rows = [], [], []
    for b in bridges:
        b_rows.append({'_uuid': 'b-' + b, 'name': b, 'ports': [], 'datapath_type': 'netdev', 'external_ids': {}})
    for bridge, name, tag, ids in ports:
        i_rows.append({'_uuid': 'i-' + name, 'name': name, 'type': '', 'ofport': 1, 'error': [], 'external_ids': ids})
        p_rows.append({'_uuid': 'p-' + name, 'name': name, 'interfaces': 'i-' + name, 'tag': tag if tag else [],
                       'trunks': [], 'vlan_mode': [], 'external_ids': {}})
        for row in b_rows:
            if row['name'] == bridge:
                row['ports'].append('p-' + name)
    return ovsdb.OvsState(b_rows, p_rows, i_rows)


EMPTY_NS = NamespaceState([link(1, 'lo')], [], [])


def existing(a, vlan=100, addresses=('192.168.0.1/24',), routes=(), up=True):
    """Host, OVS and namespace state of a correctly attached container."""
    host = NamespaceState([link(1, 'lo'), link(10, a.host_ifname, 'veth', peer=2, up=up)], [], [])
    ns = NamespaceState([link(1, 'lo'), link(2, 'eth1', 'veth', peer=10)],
                        [addr(2, c) for c in addresses], list(routes))
    ovs = ovs_state(['ovs0'], [('ovs0', a.host_ifname, vlan, {})])
    return host, ovs, ns


def test_new_attachment_creates_pair_and_port_with_tag_in_one_command():
    a = want(container='test1', bridge='ovs0', address=['192.168.0.1/24'], vlan=100)
    host = NamespaceState([link(1, 'lo')], [], [])
    bridges = plan_bridges([a], host, ovs_state(['ovs0']))
    p = plan_present(a, bridges['ovs0'], host, ovs_state(['ovs0']), EMPTY_NS)
    assert p.action == 'created' and p.create_veth
    add = [c for c in p.ovs_commands if c[0] == 'add-port']
    assert add == [['add-port', 'ovs0', a.host_ifname, 'tag=100']]
    assert ['set', 'Interface', a.host_ifname, 'external_ids:container_iface="eth1"'] in p.ovs_commands
    assert ('add_addr', ipaddress.ip_interface('192.168.0.1/24')) in p.ns_ops and ('up',) in p.ns_ops
    assert p.ovs_check == [a.host_ifname]


def test_matching_attachment_plans_nothing():
    a = want(container='test1', bridge='ovs0', address=['192.168.0.1/24'], vlan=100)
    host, ovs, ns = existing(a)
    p = plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, ns)
    assert p.action == 'none' and not p.changes and not p.ovs_commands and not p.ns_ops


def test_changed_vlan_and_addresses_are_updated_in_place():
    a = want(container='test1', bridge='ovs0', address=['192.168.0.9/24'], vlan=200)
    host, ovs, ns = existing(a)
    p = plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, ns)
    assert p.action == 'updated' and not p.create_veth
    assert p.ovs_commands == [['set', 'Port', a.host_ifname, 'tag=200']]
    assert p.ovs_undo == [['set', 'Port', a.host_ifname, 'tag=100']]
    assert p.ns_ops == [('del_addr', ipaddress.ip_interface('192.168.0.1/24')),
                        ('add_addr', ipaddress.ip_interface('192.168.0.9/24'))]
    assert p.before['vlan'] == 100 and p.after['vlan'] == 200


def test_unset_vlan_keeps_the_tag_and_zero_clears_it():
    a = want(container='test1', bridge='ovs0')
    host, ovs, ns = existing(a)
    assert plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, ns).action == 'none'
    a = want(container='test1', bridge='ovs0', vlan=0)
    p = plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, ns)
    assert p.ovs_commands == [['clear', 'Port', a.host_ifname, 'tag']]


def test_gateway_replaces_another_default_route_and_says_so():
    a = want(container='test1', bridge='ovs0', address=['192.168.0.1/24'], gateway='192.168.0.254')
    host, ovs, ns = existing(a, routes=[route(3, gw='172.17.0.1')])
    ns.by_index[3] = link(3, 'eth0', 'veth')
    p = plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, ns)
    assert p.replaced_default_routes and p.replaced_default_routes[0]['gateway'] == ipaddress.ip_address('172.17.0.1')
    assert p.ns_ops[-1] == ('add_default', ipaddress.ip_address('192.168.0.254'))
    assert any('replacing default via 172.17.0.1 dev eth0' in c for c in p.changes)


def test_gateway_already_in_place_is_no_change():
    a = want(container='test1', bridge='ovs0', gateway='192.168.0.254')
    host, ovs, ns = existing(a, routes=[route(2, gw='192.168.0.254')])
    assert plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, ns).action == 'none'


def test_routes_list_is_exact():
    a = want(container='test1', bridge='ovs0', routes=[{'dest': '10.1.0.0/16', 'via': '192.168.0.254'}])
    host, ovs, ns = existing(a, routes=[route(2, dst='10.2.0.0/16', gw='192.168.0.254'),
                                        route(2, dst='192.168.0.0/24', proto=2)])
    p = plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, ns)
    kinds = [op[0] for op in p.ns_ops]
    assert kinds == ['del_route', 'add_route'], 'connected (kernel) routes are not managed'


def test_foreign_interface_with_the_same_name_is_an_error():
    a = want(container='test1', bridge='ovs0')
    ns = NamespaceState([link(1, 'lo'), link(2, 'eth1', 'dummy')], [], [])
    host = NamespaceState([link(1, 'lo')], [], [])
    with pytest.raises(PipeworkError) as err:
        plan_present(a, plan_bridges([a], host, ovs_state(['ovs0']))['ovs0'], host, ovs_state(['ovs0']), ns)
    assert "'eth1' already exists in container 'test1'" in err.value.msg


def test_host_end_without_peer_is_recreated():
    a = want(container='test1', bridge='ovs0')
    host = NamespaceState([link(1, 'lo'), link(10, a.host_ifname, 'veth', peer=7)], [], [])
    ovs = ovs_state(['ovs0'])
    p = plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, EMPTY_NS)
    assert p.action == 'recreated' and p.delete_host_link == a.host_ifname and p.create_veth


def test_linux_bridge_move_out_of_ovs():
    a = want(container='test1', bridge='br0')
    host, ovs, ns = existing(a)
    host.links['br0'] = link(5, 'br0', 'bridge')
    p = plan_present(a, plan_bridges([a], host, ovs)['br0'], host, ovs, ns)
    assert ['--if-exists', 'del-port', a.host_ifname] in p.ovs_commands and p.set_master == 'br0'


@pytest.mark.parametrize('name,kind', [('br-x', 'linux'), ('ovs-x', 'ovs')])
def test_auto_creates_only_pipework_names(name, kind):
    a = want(container='test1', bridge=name)
    host = NamespaceState([link(1, 'lo')], [], [])
    plan = plan_bridges([a], host, ovs_state())[name]
    assert plan.create and plan.kind == kind


def test_auto_refuses_other_missing_names_and_non_bridges():
    a = want(container='test1', bridge='lan0')
    host = NamespaceState([link(1, 'lo')], [], [])
    with pytest.raises(PipeworkError) as err:
        plan_bridges([a], host, ovs_state())
    assert "bridge 'lan0' does not exist" in err.value.msg
    a = want(container='test1', bridge='eth0')
    host = NamespaceState([link(1, 'lo'), link(2, 'eth0', None)], [], [])
    with pytest.raises(PipeworkError) as err:
        plan_bridges([a], host, ovs_state())
    assert "'eth0' exists and is not a bridge" in err.value.msg


def test_explicit_type_conflicting_with_existing_bridge():
    a = want(container='test1', bridge='ovs0', bridge_type='linux')
    with pytest.raises(PipeworkError) as err:
        plan_bridges([a], NamespaceState([], [], []), ovs_state(['ovs0']))
    assert "bridge 'ovs0' is a ovs bridge, not linux" in err.value.msg


def test_bridge_address_only_added_when_missing():
    a = want(container='test1', bridge='br0', bridge_address='172.30.0.1/16')
    host = NamespaceState([link(5, 'br0', 'bridge')], [addr(5, '172.30.0.1/16')], [])
    assert plan_bridges([a], host, ovs_state())['br0'].addresses == []
    host = NamespaceState([link(5, 'br0', 'bridge')], [], [])
    assert plan_bridges([a], host, ovs_state())['br0'].changes() == ['add address 172.30.0.1/16 to bridge br0']


def test_absent_removes_pair_and_port_and_purges_old_containers():
    a = want(container='test1', state='absent')
    host, ovs, ns = existing(a)
    p = plan_absent(a, host, ovs, ns)
    assert p.action == 'removed' and p.delete_host_link == a.host_ifname
    assert p.ovs_commands == [['--if-exists', 'del-port', a.host_ifname]]
    ids = {ovsdb.EXT_TARGET: 'test1', ovsdb.EXT_CONTAINER_IFACE: 'eth1', ovsdb.EXT_CONTAINER_ID: 'old'}
    ovs = ovs_state(['ovs0'], [('ovs0', 'npold', 5, ids)])
    cmds, links, notes = plan_purge(a, host, ovs, keep_container_id=a.container.id)
    assert cmds == [['--if-exists', 'del-port', 'npold']] and notes


def test_purge_keeps_the_current_container_and_other_ifnames():
    a = want(container='test1', bridge='ovs0')
    mine = {ovsdb.EXT_TARGET: 'test1', ovsdb.EXT_CONTAINER_IFACE: 'eth1', ovsdb.EXT_CONTAINER_ID: a.container.id}
    other = {ovsdb.EXT_TARGET: 'test1', ovsdb.EXT_CONTAINER_IFACE: 'eth2', ovsdb.EXT_CONTAINER_ID: 'old'}
    ovs = ovs_state(['ovs0'], [('ovs0', 'npmine', 5, mine), ('ovs0', 'npother', 5, other)])
    cmds, dummy_links, dummy_notes = plan_purge(a, NamespaceState([], [], []), ovs, keep_container_id=a.container.id)
    assert cmds == []


def test_stale_row_after_container_restart_is_removed_in_an_earlier_transaction():
    """The veth died with the container's namespace, OVS kept the row: delete it first, re-add after."""
    a = want(container='test1', bridge='ovs0', vlan=100)
    host = NamespaceState([link(1, 'lo')], [], [])
    ovs = ovs_state(['ovs0'], [('ovs0', a.host_ifname, 100, {})])
    p = plan_present(a, plan_bridges([a], host, ovs)['ovs0'], host, ovs, EMPTY_NS)
    assert p.action == 'created'
    assert p.ovs_pre_commands == [['--if-exists', 'del-port', a.host_ifname]]
    assert ['add-port', 'ovs0', a.host_ifname, 'tag=100'] in p.ovs_commands
    assert not any(c[:2] == ['--if-exists', 'del-port'] for c in p.ovs_commands)


def _gone_container(host_ifname):
    """What the persistence agent asks after `docker rm`: the full container ID, no namespace left."""
    params = dict((k, None) for k in ARGUMENT_SPEC)
    params.update(container='d' * 64, state='absent', host_ifname=host_ifname)
    (a,) = build_attachments(params)
    a.identity = None
    return a


def test_absent_of_removed_container_deletes_its_derived_veth_on_a_linux_bridge():
    """Its namespace dies asynchronously: the host veth outlives it with no peer and no OVS row to vouch."""
    from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import derive_host_ifname
    name = derive_host_ifname('d' * 64, 'eth1')
    a = _gone_container(name)
    host = NamespaceState([link(7, name, 'veth', master=5, peer=3)], [], [])
    p = plan_absent(a, host, ovs_state(), None)
    assert p.delete_host_link == name and p.action == 'removed'


def test_absent_of_removed_container_refuses_a_foreign_veth_of_that_name():
    a = _gone_container('vethforeign')
    host = NamespaceState([link(7, 'vethforeign', 'veth', master=5, peer=3)], [], [])
    with pytest.raises(PipeworkError, match="host_ifname: veth 'vethforeign' is not the peer"):
        plan_absent(a, host, ovs_state(), None)
