# Copyright: netplumb.pipework developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario S2 after netplumb.pipework.ovs_vlan: what must hold, written down independently of
converge.yml (a wrong VLAN or address there must fail here). Helpers: ../../pipework_checks.py."""

from __future__ import annotations

import pytest

from pipework_checks import Box, assert_reach, assert_ssh, pairs

HOST, HOST_IP, HOST_ADDRESS, GATEWAY = 'host1', '10.10.101.105', '10.10.101.105/24', '10.10.101.254'
BRIDGE = 'ovs0'
CONTAINERS = {
    'test1': Box('test1', HOST, '192.168.0.1/24', vlan=100),
    'test2': Box('test2', HOST, '192.168.0.2/24', vlan=100),
    'test3': Box('test3', HOST, '192.168.0.3/24', vlan=200),
    'test4': Box('test4', HOST, '192.168.0.4/24', vlan=200),
}
# Same VLAN reaches, every cross-VLAN pair does not (one IP subnet: the isolation is layer 2).
REACHABLE = [('test1', 'test2'), ('test3', 'test4')]
PAIRS = pairs(CONTAINERS, REACHABLE)
BOXES = pytest.mark.parametrize('box', CONTAINERS.values(), ids=CONTAINERS)


@pytest.fixture(scope='module')
def state(lab):
    return lab.collect(CONTAINERS, hosts=[HOST], ssh_targets=[HOST_IP])


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


def test_bridge_is_userspace_and_owned(state):
    bridge = state.hosts[HOST].ovs_bridges()[BRIDGE]
    assert bridge['datapath_type'] == 'netdev'
    assert bridge['external_ids'].get('netplumb_owner') == 'netplumb.pipework'


def test_host_addressing_untouched(state):
    """ovs_vlan only plugs containers in: the host keeps its address and default route on eth0."""
    host = state.hosts[HOST]
    assert host.ipv4('eth0') == [HOST_ADDRESS]
    assert host.default_routes() == [(GATEWAY, 'eth0')]


def test_host_answers_ssh(state):
    assert_ssh(state.ssh[HOST_IP], HOST)
