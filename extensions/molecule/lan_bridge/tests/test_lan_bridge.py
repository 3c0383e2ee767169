# Copyright: netplumb.pipework developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario S1 after netplumb.pipework.lan_bridge: what must hold, written down independently of
converge.yml. Helpers: ../../pipework_checks.py.

The LAN is the lab's switch: its gateway (192.168.1.1, the switch namespace) and a LAN client
(192.168.1.200, the lab's client namespace on this machine). The client serves HTTP during the test so
the container can show TCP out to the LAN; the client in turn fetches the container's page.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from pipework_checks import LAB, Box, Job, assert_reach, assert_ssh

HOST, HOST_IP, HOST_ADDRESS = 'hostA', '192.168.1.102', '192.168.1.102/24'
UPLINK, BRIDGE, GATEWAY = 'enp0s3', 'br0', '192.168.1.1'
CLIENT, CLIENT_PORT, CLIENT_NETNS = '192.168.1.200', 8080, f'np-{LAB}-lan'
NOBODY = '192.168.1.199'  # an unused LAN address
TEST1 = Box('test1', HOST, '192.168.1.150/24')
CONTAINERS = {'test1': TEST1}

# (probe, expected result); a tcp probe is an HTTP GET that must return the given body.
FROM_TEST1 = [
    (Job('ping', 'gateway', GATEWAY), True),
    (Job('ping', 'host', HOST_IP), True),
    (Job('ping', 'client', CLIENT), True),
    (Job('tcp', 'client', CLIENT, CLIENT_PORT, 'lan-client'), True),
    # negative controls: the probes do fail where nothing answers
    (Job('ping', 'nobody', NOBODY), False),
    (Job('tcp', 'client-closed-port', CLIENT, CLIENT_PORT + 1, 'lan-client'), False),
]
FROM_CLIENT = [
    (Job('ping', 'test1', TEST1.ip), True),
    (Job('tcp', 'test1', TEST1.ip, 80, 'test1'), True),
    (Job('tcp', 'test1-closed-port', TEST1.ip, 81, 'test1'), False),
]


@pytest.fixture(scope='module')
def lan_client_httpd():
    """busybox httpd in the lab's LAN client namespace for the test's duration (ended by its PID)."""
    with tempfile.TemporaryDirectory(prefix='np-molecule-') as root:
        (Path(root) / 'index.html').write_text('lan-client\n', encoding='utf-8')
        # ip netns exec execs busybox: the PID is httpd's own
        server = subprocess.Popen(['ip', 'netns', 'exec', CLIENT_NETNS, 'busybox', 'httpd', '-f',  # pylint: disable=consider-using-with
                                   '-p', str(CLIENT_PORT), '-h', root])
        try:
            yield server
        finally:
            server.terminate()
            server.wait(timeout=10)


@pytest.fixture(scope='module')
def state(lab, lan_client_httpd):  # pylint: disable=unused-argument,redefined-outer-name
    return lab.collect(CONTAINERS, hosts=[HOST], kinds=(),
                       extra={'test1': [pair[0] for pair in FROM_TEST1]},
                       outside={'client': (('netns', CLIENT_NETNS), [pair[0] for pair in FROM_CLIENT])},
                       ssh_targets=[HOST_IP])


@pytest.mark.parametrize('job,expected', FROM_TEST1, ids=[f'{pair[0].kind}-{pair[0].dst}' for pair in FROM_TEST1])
def test_from_test1(state, job, expected):  # pylint: disable=redefined-outer-name
    assert_reach(state.probes[(job.kind, 'test1', job.dst)], expected)


@pytest.mark.parametrize('job,expected', FROM_CLIENT, ids=[f'{pair[0].kind}-{pair[0].dst}' for pair in FROM_CLIENT])
def test_from_lan_client(state, job, expected):  # pylint: disable=redefined-outer-name
    assert_reach(state.probes[(job.kind, 'client', job.dst)], expected)


def test_container_address_and_default_route(state):  # pylint: disable=redefined-outer-name
    box = state.boxes['test1']
    assert box.addresses == [TEST1.address]
    assert [line for line in box.routes if line.startswith('default')] == [f'default via {GATEWAY} dev eth1']


def test_host_address_moved_to_bridge(state):  # pylint: disable=redefined-outer-name
    host = state.hosts[HOST]
    assert (host.ipv4(BRIDGE), host.ipv4(UPLINK)) == ([HOST_ADDRESS], [])
    assert host.default_routes() == [(GATEWAY, BRIDGE)]


def test_uplink_and_container_are_bridge_ports(state):  # pylint: disable=redefined-outer-name
    host = state.hosts[HOST]
    assert host.link(BRIDGE)['linkinfo']['info_kind'] == 'bridge'
    ports = sorted(link['ifname'] for link in host.links if link.get('master') == BRIDGE)
    assert UPLINK in ports and len(ports) == 2, ports  # the uplink and test1's veth


def test_host_answers_ssh_after_migration(state):  # pylint: disable=redefined-outer-name
    assert_ssh(state.ssh[HOST_IP], HOST)
