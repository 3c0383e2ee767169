# Copyright: netplumb.pipework developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scenario S0 after netplumb.pipework.port_publish: what must hold, written down independently of
converge.yml. Helpers: ../../pipework_checks.py.

Published ports are checked from the lab's LAN client (10.10.101.200, a namespace of this machine), from
the host itself and from the containers (hairpin); free host ports (-P, ip::port) are read from the
host's nat table first. A container reaching the LAN client shows the MASQUERADE: the client has no route
back to 172.30.0.0/16, so only a reply to the host's address comes back.
"""

from __future__ import annotations

import pytest

from pipework_checks import LAB, PREFIX, Box, Job, assert_reach, assert_ssh

HOST, HOST_IP, HOST_ADDRESS, GATEWAY = 'host1', '10.10.101.105', '10.10.101.105/24', '10.10.101.254'
BRIDGE, BRIDGE_ADDRESS = 'br-publish', '172.30.0.1/16'
CLIENT, CLIENT_NETNS = '10.10.101.200', f'np-{LAB}-lan'
WEB1 = Box('web1', HOST, '172.30.0.2/16')
WEB2 = Box('web2', HOST, '172.30.0.3/16')
CONTAINERS = {'web1': WEB1, 'web2': WEB2}
# (host_ip or None for every address, host_port or None for a free port) -> container:80, per container
PUBLISHED = {
    'web1': [(None, 8080), (HOST_IP, None)],
    'web2': [(HOST_IP, 9090), (None, None)],
}
UNPUBLISHED_PORT = 8081


@pytest.fixture(scope='module')
def nat(lab):
    """The host's port mappings, by container short name: [(host_ip, host_port, to)]."""
    found = {}
    for rule in lab.host_state(HOST).dnat():
        if rule['target'].startswith(PREFIX) and rule['proto'] == 'tcp':
            found.setdefault(rule['target'][len(PREFIX):], []).append((rule['host_ip'], rule['host_port'], rule['to']))
    return found


def free_port(nat, name, host_ip):  # pylint: disable=redefined-outer-name
    """The free host port given to ``name`` for a spec without a host port on ``host_ip``."""
    fixed = {port for ip, port in PUBLISHED[name] if port}
    ports = [port for ip, port, _to in nat.get(name, []) if ip == host_ip and port not in fixed]
    assert len(ports) == 1, f'{name}: expected one free port on {host_ip or "every address"}: {nat.get(name)}'
    return ports[0]


def probes(nat):  # pylint: disable=redefined-outer-name
    """(where, Job, expected) of every probe."""
    web1_free, web2_free = free_port(nat, 'web1', HOST_IP), free_port(nat, 'web2', None)
    published = [Job('tcp', f'{HOST_IP}:8080', HOST_IP, 8080, 'web1'),
                 Job('tcp', f'{HOST_IP}:web1-free', HOST_IP, web1_free, 'web1'),
                 Job('tcp', f'{HOST_IP}:9090', HOST_IP, 9090, 'web2'),
                 Job('tcp', f'{HOST_IP}:web2-free', HOST_IP, web2_free, 'web2')]
    unpublished = Job('tcp', f'{HOST_IP}:{UNPUBLISHED_PORT}', HOST_IP, UNPUBLISHED_PORT, 'web1')
    return ([('client', job, True) for job in published]
            + [('client', unpublished, False),
               # the container subnet itself is not reachable from the LAN, only the published ports
               ('client', Job('tcp', 'web1-direct', WEB1.ip, 80, 'web1'), False),
               # from the host itself (OUTPUT chain), but not on 127.0.0.1 (localhost is not enabled)
               ('host', Job('tcp', f'{HOST_IP}:8080', HOST_IP, 8080, 'web1'), True),
               ('host', Job('tcp', '127.0.0.1:8080', '127.0.0.1', 8080, 'web1'), False),
               # hairpin: a container through the host's published port, to its neighbour and to itself
               ('web1', Job('tcp', f'{HOST_IP}:9090', HOST_IP, 9090, 'web2'), True),
               ('web2', Job('tcp', f'{HOST_IP}:8080', HOST_IP, 8080, 'web1'), True),
               ('web1', Job('tcp', f'{HOST_IP}:web1-free', HOST_IP, web1_free, 'web1'), True),
               ('web1', unpublished, False),
               # out to the LAN through the host (MASQUERADE)
               ('web1', Job('ping', 'gateway', GATEWAY), True),
               ('web2', Job('ping', 'client', CLIENT), True)])


@pytest.fixture(scope='module')
def state(lab, nat):  # pylint: disable=redefined-outer-name
    jobs = probes(nat)
    return lab.collect(CONTAINERS, hosts=[HOST], ssh_targets=[HOST_IP],
                       extra={name: [job for where, job, _e in jobs if where == name] for name in CONTAINERS},
                       outside={'client': (('netns', CLIENT_NETNS), [job for where, job, _e in jobs if where == 'client']),
                                'host': (('host', HOST), [job for where, job, _e in jobs if where == 'host'])})


# the probes need the free ports, known only once the lab runs: parametrize over positions
PROBE_IDS = ['client-8080', 'client-web1-free', 'client-9090', 'client-web2-free', 'client-unpublished',
             'client-container-direct', 'host-8080', 'host-localhost', 'web1-hairpin-web2', 'web2-hairpin-web1',
             'web1-hairpin-self', 'web1-unpublished', 'web1-gateway', 'web2-masquerade-client']


@pytest.mark.parametrize('index', range(len(PROBE_IDS)), ids=PROBE_IDS)
def test_published_ports(state, nat, index):  # pylint: disable=redefined-outer-name
    where, job, expected = probes(nat)[index]
    assert_reach(state.probes[(job.kind, where, job.dst)], expected)


@pytest.mark.parametrize('src,dst', [('web1', 'web2'), ('web2', 'web1')])
@pytest.mark.parametrize('kind', ['ping', 'tcp'])
def test_containers_reach_each_other_on_the_bridge(state, kind, src, dst):  # pylint: disable=redefined-outer-name
    assert_reach(state.probes[(kind, src, dst)], True)


@pytest.mark.parametrize('name', CONTAINERS)
def test_nat_mappings(nat, name):  # pylint: disable=redefined-outer-name
    """Exactly the specs of converge, each to the container's port 80; free ports are unprivileged."""
    box = CONTAINERS[name]
    got = sorted(nat.get(name, []), key=str)
    assert all(to == f'{box.ip}:80' for _ip, _port, to in got), got
    want_fixed = sorted((ip, port) for ip, port in PUBLISHED[name] if port)
    assert sorted((ip, port) for ip, port, _to in got if port in dict(map(reversed, want_fixed))) == want_fixed, got
    free = [(ip, port) for ip, port, _to in got if port not in {p for _i, p in want_fixed}]
    assert sorted(ip or '' for ip, _port in free) == sorted(ip or '' for ip, port in PUBLISHED[name] if not port), got
    assert all(port >= 1024 for _ip, port in free), got


def test_masquerade_and_forwarding(state):  # pylint: disable=redefined-outer-name
    host = state.hosts[HOST]
    assert f'-A NETPLUMB-MASQ -s 172.30.0.0/16 ! -o {BRIDGE} -m comment --comment "netplumb/masquerade" -j MASQUERADE' \
        in host.nat.splitlines(), host.nat
    assert host.ip_forward


def test_bridge_and_container_addresses(state):  # pylint: disable=redefined-outer-name
    host = state.hosts[HOST]
    assert host.ipv4(BRIDGE) == [BRIDGE_ADDRESS]
    assert host.ipv4('eth0') == [HOST_ADDRESS]
    assert host.default_routes() == [(GATEWAY, 'eth0')]
    for name, box in CONTAINERS.items():
        assert state.boxes[name].addresses == [box.address]
        assert [line for line in state.boxes[name].routes if line.startswith('default')] == \
            [f'default via {BRIDGE_ADDRESS.split("/", maxsplit=1)[0]} dev eth1']


def test_host_answers_ssh(state):  # pylint: disable=redefined-outer-name
    assert_ssh(state.ssh[HOST_IP], HOST)
