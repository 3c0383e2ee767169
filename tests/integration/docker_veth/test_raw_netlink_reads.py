"""The raw rtnetlink reader (netlink_dump.py) returns exactly what the pyroute2 path returns.

A throwaway namespace gets a Linux bridge, veths (one enslaved, one down), a macvlan link, IPv4 and IPv6
addresses (one IPv4 point-to-point address whose IFA_LOCAL differs from IFA_ADDRESS), default routes via
gateways, routes with metrics, a route with a preferred source, a multipath route, a blackhole route and a
route in table 1000 (above 255: only RTA_TABLE carries it). Both readers run in a subprocess with each
Python under test: Debian's /usr/bin/python3 (pyroute2 0.7) and this interpreter (the venv's 0.9).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nphelpers import REPO, run, suffix

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
SETUP = [
    'link set lo up',
    'link add npbr0 type bridge',
    'link set npbr0 up',
    'link add npva type veth peer name npvb',
    'link set npva master npbr0',
    'link set npva up',
    'link set npvb address 02:AA:bb:cc:dd:0e mtu 1400 up',
    'link add npvc type veth peer name npvd',
    'link add link npvb name npmv type macvlan mode bridge',
    'addr add 192.0.2.1/24 dev npbr0',
    'addr add 2001:db8:1::1/64 dev npbr0 nodad',
    'addr add 198.51.100.2/24 dev npvb',
    'addr add 2001:db8:2::2/64 dev npvb nodad',
    'addr add 10.1.1.1 peer 10.1.1.2/32 dev npvb',
    'route add default via 198.51.100.1 dev npvb',
    'route add ::/0 via 2001:db8:2::1 dev npvb',
    'route add 203.0.113.0/24 via 192.0.2.254 dev npbr0 metric 50',
    'route add 2001:db8:9::/48 via 2001:db8:1::fe dev npbr0 metric 300',
    'route add 10.9.0.0/16 dev npbr0 src 192.0.2.1',
    'route add 172.16.0.0/16 nexthop via 198.51.100.1 dev npvb nexthop via 192.0.2.254 dev npbr0',
    'route add blackhole 10.66.0.0/16',
    'route add 10.10.0.0/16 dev npbr0 table 1000',
]


def pythons():
    found = [sys.executable]
    system = '/usr/bin/python3'
    probe = subprocess.run([system, '-c', 'import pyroute2'], capture_output=True, check=False) if os.path.exists(system) else None
    if probe is not None and probe.returncode == 0:
        found.append(system)
    return found


@pytest.fixture
def lab_netns():
    name = 'nprawrd' + suffix()
    run(['ip', 'netns', 'add', name])
    try:
        run(['ip', '-n', name, '-batch', '-'], input='\n'.join(SETUP) + '\n')
        yield name
    finally:
        run(['ip', 'netns', 'del', name], check=False)


def read_both(python, name):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    proc = subprocess.run([python, os.path.join(HERE, 'netlink_compare.py'), '/run/netns/%s' % name],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ip(kind, text):
    return {'class': kind, 'text': text}


@pytest.mark.parametrize('python', pythons())
def test_raw_reader_equals_pyroute2(lab_netns, python):
    out = read_both(python, lab_netns)
    pyr, raw = out['pyroute2'], out['raw']
    assert raw['links'] == pyr['links']
    assert raw['addrs'] == pyr['addrs']
    assert raw['routes'] == pyr['routes']
    assert out['raw_links_only'] == raw['links']

    # ... and what they agree on is the namespace as set up, not two empty lists.
    links = dict((ln['name'], ln) for ln in raw['links'])
    assert set(links) == {'lo', 'npbr0', 'npva', 'npvb', 'npvc', 'npvd', 'npmv'}
    assert links['npvb'] == {'index': links['npvb']['index'], 'name': 'npvb', 'kind': 'veth', 'master': None,
                             'mtu': 1400, 'mac': '02:aa:bb:cc:dd:0e', 'peer': links['npva']['index'], 'up': True}
    assert links['npva']['master'] == links['npbr0']['index'] and links['npva']['up'] is True
    assert links['npbr0']['kind'] == 'bridge'
    assert links['npvc']['up'] is False and links['npvc']['peer'] == links['npvd']['index']
    assert links['npmv']['kind'] == 'macvlan' and links['npmv']['peer'] == links['npvb']['index']
    assert links['lo']['kind'] is None and links['lo']['mac'] == '00:00:00:00:00:00'

    addrs = [(a['index'], a['address']['class'], a['address']['text']) for a in raw['addrs']]
    vb, br = links['npvb']['index'], links['npbr0']['index']
    for want in ((br, 'IPv4Interface', '192.0.2.1/24'), (br, 'IPv6Interface', '2001:db8:1::1/64'),
                 (vb, 'IPv4Interface', '198.51.100.2/24'), (vb, 'IPv6Interface', '2001:db8:2::2/64'),
                 (vb, 'IPv4Interface', '10.1.1.1/32')):  # IFA_LOCAL, not the peer's IFA_ADDRESS
        assert want in addrs
    assert (vb, 'IPv4Interface', '10.1.1.2/32') not in addrs

    routes = raw['routes']

    def route(dst):
        return [r for r in routes if r['dst'] == dst]

    defaults = [r for r in routes if r['dst'] is None and r['table'] == 254]
    assert {(r['family'], r['gateway']['text'], r['oif']) for r in defaults} == {
        (2, '198.51.100.1', vb), (10, '2001:db8:2::1', vb)}
    metric = route(ip('IPv4Network', '203.0.113.0/24'))
    assert [(r['priority'], r['gateway'], r['oif'], r['proto'], r['type']) for r in metric] == [
        (50, ip('IPv4Address', '192.0.2.254'), br, 3, 1)]
    assert [r['priority'] for r in route(ip('IPv6Network', '2001:db8:9::/48'))] == [300]
    assert [r['prefsrc'] for r in route(ip('IPv4Network', '10.9.0.0/16'))] == ['192.0.2.1']
    assert [(r['oif'], r['gateway']) for r in route(ip('IPv4Network', '172.16.0.0/16'))] == [(None, None)]
    assert [r['type'] for r in route(ip('IPv4Network', '10.66.0.0/16'))] == [6]
    assert [r['table'] for r in route(ip('IPv4Network', '10.10.0.0/16'))] == [1000]
    assert any(r['table'] == 255 and r['type'] == 2 for r in routes)  # the kernel's local table is read too
