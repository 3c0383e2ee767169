# Copyright: netplumb.pipework developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario S3 after netplumb.pipework.multihost_vlan: what must hold, written down independently of
converge.yml (a wrong VLAN or address there must fail here). Helpers: ../../pipework_checks.py."""

from __future__ import annotations

import pytest

from pipework_checks import Box, assert_reach, assert_ssh, pairs

BRIDGE, UPLINK, GATEWAY = 'ovs0', 'eth0', '10.10.101.254'
HOSTS = {'host1': '10.10.101.105/24', 'host2': '10.10.101.106/24'}
CONTAINERS = {
    'test1': Box('test1', 'host1', '192.168.0.1/24', vlan=100),
    'test2': Box('test2', 'host1', '192.168.0.2/24', vlan=200),
    'test3': Box('test3', 'host2', '192.168.0.3/24', vlan=100),
    'test4': Box('test4', 'host2', '192.168.0.4/24', vlan=200),
}
# Same VLAN reaches across the hosts; test1 reaches neither test2 (same host) nor test4, test2 not test3.
REACHABLE = [('test1', 'test3'), ('test2', 'test4')]
PAIRS = pairs(CONTAINERS, REACHABLE)
BOXES = pytest.mark.parametrize('box', CONTAINERS.values(), ids=CONTAINERS)
EACH_HOST = pytest.mark.parametrize('name', HOSTS)


def address(name):
    return HOSTS[name].split('/', maxsplit=1)[0]


@pytest.fixture(scope='module')
def state(lab):
    return lab.collect(CONTAINERS, hosts=list(HOSTS), ssh_targets=[address(name) for name in HOSTS])


@pytest.mark.parametrize('src,dst,expected', PAIRS)
def test_ping(state, src, dst, expected):
    assert_reach(state.probes[('ping', src, dst)], expected)


@pytest.mark.parametrize('src,dst,expected', PAIRS)
def test_tcp(state, src, dst, expected):
    assert_reach(state.probes[('tcp', src, dst)], expected)


@BOXES
def test_container_address(state, box):
    assert state.boxes[box.name].addresses == [box.address]


@BOXES
def test_ovs_port_tag(state, box):
    port = state.hosts[box.host].container_port(box)
    assert (port['bridge'], port['tag'], port['trunks']) == (BRIDGE, box.vlan, []), port


@EACH_HOST
def test_uplink_is_a_trunk_port(state, name):
    """eth0 is a port of ovs0 that carries every VLAN (no tag, no trunks list, no vlan_mode)."""
    port = state.hosts[name].ovs_ports()[UPLINK]
    assert (port['bridge'], port['tag'], port['trunks'], port['vlan_mode']) == (BRIDGE, None, [], None), port
    assert state.hosts[name].ovs_bridges()[BRIDGE]['datapath_type'] == 'netdev'


@EACH_HOST
def test_host_address_moved_to_bridge(state, name):
    host = state.hosts[name]
    assert (host.ipv4(BRIDGE), host.ipv4(UPLINK)) == ([HOSTS[name]], [])


@EACH_HOST
def test_default_route_via_bridge(state, name):
    assert state.hosts[name].default_routes() == [(GATEWAY, BRIDGE)]


@EACH_HOST
def test_host_answers_ssh_after_migration(state, name):
    """A NEW ssh connection to the host's address (now on ovs0) answers."""
    assert_ssh(state.ssh[address(name)], name)
