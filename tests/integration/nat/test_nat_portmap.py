"""nat_portmap against the real kernel (a throwaway host namespace with Docker's footprint), real
containers and real traffic from a client namespace. Acceptance 1-5 and 7 of issue 4."""

from __future__ import annotations

import time

import pytest

from natlab import (CLIENT, CLIENT2, GATEWAY, NEIGHBOUR, SUBNET, UPLINK, UPLINK2, UPLINK6, C_ADDR, C_ADDR6,
                    TcpServer, UdpEcho, UdpFlow, http_get, ns_run, run_nat, save_rules, sysctl, tcp_connects,
                    tcp_read)


def by_port(result):
    return dict((m['host_port'], m) for m in result['mappings'])


def test_every_publish_format_carries_traffic(lab):
    """Acceptance 1: each -p format, TCP to busybox httpd and UDP, from the LAN client."""
    c1 = lab.containers['c1']
    echo = UdpEcho(lab.pids['c1'], 5300, 'c1-udp')
    try:
        r = run_nat(lab.host, {'container': c1, 'publish': [
            '%s:8080:80' % UPLINK,      # ip:hostPort:containerPort
            '%s::81' % UPLINK,          # ip::containerPort (a free port on that address)
            '8081:82',                  # hostPort:containerPort
            '80',                       # containerPort (a free port, like -P)
            '8000-8002:80-82',          # range, port by port
            '5300:5300/udp',
        ]})
        assert not r.get('failed'), r
        assert r['changed']
        ports = by_port(r)
        free = sorted(p for p in ports if p >= 32768)
        assert free == [32768, 32769], ports  # lowest free ports of ip_local_port_range
        assert ports[32768]['host_ip'] == UPLINK and ports[32768]['container_port'] == 81
        assert ports[32769]['host_ip'] == '0.0.0.0' and ports[32769]['container_port'] == 80
        assert all(m['container_ip'] == C_ADDR['c1'] and m['target'] == c1 for m in r['mappings'])

        expect = {8080: 'c1:80', 32768: 'c1:81', 8081: 'c1:82', 32769: 'c1:80',
                  8000: 'c1:80', 8001: 'c1:81', 8002: 'c1:82'}
        for port, body in expect.items():
            assert http_get(lab.lan, UPLINK, port) == body, 'host port %d' % port
        # ip:hostPort binds that address only; a hostPort-only spec answers on every host address
        assert http_get(lab.lan2, UPLINK2, 8080) is None
        assert http_get(lab.lan2, UPLINK2, 8081) == 'c1:82'

        flow = UdpFlow(lab.lan, UPLINK, 5300, 40001)
        try:
            assert flow.wait_for('c1-udp')
        finally:
            flow.close()
        # forwarding was off (the baseline): the module turned it on and said so
        assert sysctl(lab.host, 'net.ipv4.ip_forward') == '1'
        assert any('ip_forward' in w for w in r.get('warnings', []))
    finally:
        echo.close()


def test_second_run_changes_nothing_and_keeps_free_ports(lab):
    """Acceptance 3: a re-run reports changed=false with the same random ports; check mode agrees."""
    args = {'targets': [{'container': lab.containers['c1'], 'publish': ['80', '81/udp', '%s::82' % UPLINK]},
                        {'container': lab.containers['c2'], 'publish': ['80']}],
            'masquerade': [SUBNET], 'bridge': lab.bridge}
    check = run_nat(lab.host, args, check=True)
    assert check['changed'] and save_rules(lab.host) == lab.baseline, 'check mode changed the rules'
    first = run_nat(lab.host, args)
    assert first['changed']
    assert [m['host_port'] for m in check['mappings']] == [m['host_port'] for m in first['mappings']]
    rules = save_rules(lab.host)
    second = run_nat(lab.host, args, diff=True)
    assert not second.get('failed') and second['changed'] is False, second['changes']
    assert second['mappings'] == first['mappings']
    assert save_rules(lab.host) == rules
    assert http_get(lab.lan, UPLINK, by_port(first)[32770]['host_port']) in ('c2:80', 'c1:80')


def test_diff_shows_the_rules(lab):
    r = run_nat(lab.host, {'container': lab.containers['c1'], 'publish': ['8080:80']}, diff=True)
    out = r['_stdout']
    assert '+-A NETPLUMB-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "netplumb/target=%s"' \
        % lab.containers['c1'] in out
    assert '+-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "netplumb/jump" -j NETPLUMB-DNAT' in out
    # what the diff promised is what iptables-save shows
    saved = save_rules(lab.host)
    for line in out.splitlines():
        if line.startswith('+-A '):
            assert line[1:] in saved


def test_masquerade_outbound_but_not_toward_the_bridge(lab):
    """Acceptance 2: the LAN peer sees the host's address; a neighbour on the bridge sees the container's."""
    r = run_nat(lab.host, {'masquerade': [SUBNET], 'bridge': lab.bridge})
    assert r['changed'] and r['masquerade'] == [{'source': SUBNET, 'bridge': lab.bridge}]
    peer = TcpServer(lab.lan, CLIENT, 9000)
    inside = TcpServer(lab.pids['c2'], C_ADDR['c2'], 9001)
    try:
        assert tcp_read(lab.pids['c1'], CLIENT, 9000) == b'hello'
        assert peer.peers == [UPLINK]
        assert tcp_read(lab.pids['c1'], C_ADDR['c2'], 9001) == b'hello'
        assert inside.peers == [C_ADDR['c1']]
    finally:
        peer.close()
        inside.close()


def test_hairpin_own_and_neighbour_port(lab):
    """Acceptance 3: containers reach their own and a neighbour's published port through host addresses."""
    assert lab.hairpin('c1') is False
    r = run_nat(lab.host, {'targets': [{'container': lab.containers['c1'], 'publish': ['8080:80']},
                                       {'container': lab.containers['c2'], 'publish': ['8081:80']}]})
    assert not r.get('failed'), r
    assert lab.hairpin('c1') is True and lab.hairpin('c2') is True
    assert any('hairpin' in c for c in r['changes'])
    for who in ('c1', 'c2'):
        for ip in (UPLINK, GATEWAY):
            assert http_get(lab.pids[who], ip, 8080) == 'c1:80', '%s -> %s:8080' % (who, ip)
            assert http_get(lab.pids[who], ip, 8081) == 'c2:80', '%s -> %s:8081' % (who, ip)


def test_localhost_and_the_loopback_guard(lab):
    """Acceptance 3: 127.0.0.1 answers from the host; a neighbour's packet to 127.0.0.1 is dropped."""
    secret = TcpServer(lab.host, '127.0.0.1', 9999, token=b'secret')
    try:
        # the attack path is real: with route_localnet alone, the neighbour reaches a loopback-only service
        sysctl(lab.host, 'net.ipv4.conf.%s.route_localnet' % lab.bridge, 1)
        assert tcp_read(lab.nbr, '127.0.0.1', 9999) == b'secret'
        sysctl(lab.host, 'net.ipv4.conf.%s.route_localnet' % lab.bridge, 0)

        r = run_nat(lab.host, {'container': lab.containers['c1'], 'localhost': True,
                               'publish': ['8080:80', '127.0.0.1:8090:81']})
        assert not r.get('failed'), r
        assert sysctl(lab.host, 'net.ipv4.conf.%s.route_localnet' % lab.bridge) == '1'
        assert any('route_localnet' in w and 'CVE-2020-8558' in w for w in r['warnings'])
        assert http_get(lab.host, '127.0.0.1', 8080) == 'c1:80'
        assert http_get(lab.host, '127.0.0.1', 8090) == 'c1:81'
        assert http_get(lab.lan, UPLINK, 8080) == 'c1:80'
        assert http_get(lab.lan, UPLINK, 8090) is None          # loopback-only mapping
        assert tcp_read(lab.nbr, '127.0.0.1', 9999, timeout=1.5) is None
        assert not tcp_connects(lab.nbr, '127.0.0.1', 8090, timeout=1.5)
        assert secret.peers == [NEIGHBOUR]                      # only the control connection got through
    finally:
        secret.close()


def test_conflicts_fail_and_change_nothing(lab):
    """Acceptance 3: a port of another target, a bound port, Docker's port: clear errors, no change."""
    c1, c2 = lab.containers['c1'], lab.containers['c2']
    assert not run_nat(lab.host, {'container': c1, 'publish': ['8080:80']}).get('failed')
    before = save_rules(lab.host)
    r = run_nat(lab.host, {'container': c2, 'publish': ['8081:80', '8080:80']})
    assert r['failed'] and c1 in r['msg'] and c2 in r['msg'] and "'8080:80'" in r['msg'], r['msg']
    assert save_rules(lab.host) == before

    listener = TcpServer(lab.host, '0.0.0.0', 8095)
    try:
        r = run_nat(lab.host, {'container': c2, 'publish': ['8095:80']})
        assert r['failed'] and 'bound by a local process' in r['msg'] and '0.0.0.0:8095' in r['msg']
    finally:
        listener.close()
    r = run_nat(lab.host, {'container': c2, 'publish': ['9090:80']})
    assert r['failed'] and 'chain DOCKER' in r['msg']
    assert save_rules(lab.host) == before
    assert http_get(lab.lan, UPLINK, 8080) == 'c1:80'


@pytest.mark.parametrize('spec, words', [
    ('0', 'out of range'), ('70000:80', 'out of range'), ('1.2.3:80:80', 'not an IPv4 address'),
    ('80/icmp', 'unknown protocol'), ('8000-8002:80-81', 'has 3 ports'),
])
def test_bad_input_fails_before_any_change(lab, spec, words):
    """Acceptance 7: bad specs fail naming the spec, and nothing changes."""
    r = run_nat(lab.host, {'targets': [{'container': lab.containers['c2'], 'publish': ['8081:80']},
                                       {'container': lab.containers['c1'], 'publish': ['8080:80', spec]}]})
    assert r['failed'] and repr(spec) in r['msg'] and words in r['msg'], r['msg']
    assert r['msg'].startswith('targets[1]:')
    assert save_rules(lab.host) == lab.baseline
    assert sysctl(lab.host, 'net.ipv4.ip_forward') == '0'


def test_unknown_container_fails_before_any_change(lab):
    r = run_nat(lab.host, {'targets': [{'container': lab.containers['c1'], 'publish': ['8080:80']},
                                       {'container': 'np-nat-nosuch-' + lab.tag, 'publish': ['80']}]})
    assert r['failed'] and 'np-nat-nosuch-' + lab.tag in r['msg'] and 'no container' in r['msg']
    assert save_rules(lab.host) == lab.baseline


def test_absent_removes_exactly_its_rules(lab):
    """Acceptance 3: absent removes one target's rules, then everything, back to Docker's footprint."""
    c1, c2 = lab.containers['c1'], lab.containers['c2']
    r = run_nat(lab.host, {'targets': [{'container': c1, 'publish': ['8080:80', '5300:53/udp'], 'localhost': True},
                                       {'container': c2, 'publish': ['8081:80']}],
                           'masquerade': [SUBNET], 'bridge': lab.bridge, 'isolate': True})
    assert not r.get('failed'), r
    r = run_nat(lab.host, {'container': c1, 'state': 'absent'})
    assert r['changed'] and r['mappings'] == []
    saved = save_rules(lab.host)
    assert 'target=%s"' % c1 not in saved and 'target=%s"' % c2 in saved
    assert http_get(lab.lan, UPLINK, 8080) is None and http_get(lab.lan, UPLINK, 8081) == 'c2:80'
    # Docker's and the hand-written rules are still as they were
    for line in lab.baseline.splitlines():
        if line.startswith('-A'):
            assert line in saved
    r = run_nat(lab.host, {'container': c2, 'state': 'absent', 'masquerade': [SUBNET], 'bridge': lab.bridge,
                           'isolate': False})
    assert r['changed']
    assert save_rules(lab.host) == lab.baseline
    again = run_nat(lab.host, {'container': c2, 'state': 'absent', 'masquerade': [SUBNET], 'bridge': lab.bridge})
    assert again['changed'] is False


def test_udp_remap_after_removal_reaches_the_new_container(lab):
    """Acceptance 4: a UDP flow that keeps sending follows the port to another container (conntrack flushed)."""
    c1, c2 = lab.containers['c1'], lab.containers['c2']
    e1 = UdpEcho(lab.pids['c1'], 5300, 'c1-udp')
    e2 = UdpEcho(lab.pids['c2'], 5300, 'c2-udp')
    flow = UdpFlow(lab.lan, UPLINK, 5300, 40002)
    try:
        assert not run_nat(lab.host, {'container': c1, 'publish': ['5300:5300/udp']}).get('failed')
        assert flow.wait_for('c1-udp')
        r = run_nat(lab.host, {'container': c1, 'state': 'absent', 'publish': ['5300:5300/udp']})
        assert r['conntrack_flushed'] == ['IPv4 udp/5300']
        # the flow goes on while unmapped (new conntrack entries toward the host itself)...
        flow.replies.clear()
        seen = e1.received
        ns_run(lab.host, ['sleep', '0.5'])
        assert e1.received == seen
        # ... and is remapped to another container: it must arrive there, not stay stuck on a stale entry
        r = run_nat(lab.host, {'container': c2, 'publish': ['5300:5300/udp']})
        assert r['conntrack_flushed'] == ['IPv4 udp/5300']
        assert flow.wait_for('c2-udp'), flow.replies[-5:]
        assert e2.received > 0
    finally:
        flow.close()
        e1.close()
        e2.close()


def test_forward_drop_still_works(lab):
    """Acceptance 5: under FORWARD DROP, published and bridged traffic works; anything else stays dropped."""
    c1 = lab.containers['c1']
    inside = TcpServer(lab.pids['c2'], C_ADDR['c2'], 9002)
    try:
        # br_netfilter: bridged traffic crosses FORWARD, dropped by Docker's policy until the collection owns it
        assert tcp_read(lab.pids['c1'], C_ADDR['c2'], 9002, timeout=1.5) is None
        r = run_nat(lab.host, {'container': c1, 'publish': ['8080:80'], 'masquerade': [SUBNET],
                               'bridge': lab.bridge})
        assert not r.get('failed'), r
        assert save_rules(lab.host).count(':FORWARD DROP') == 1
        assert http_get(lab.lan, UPLINK, 8080) == 'c1:80'
        assert tcp_read(lab.pids['c1'], C_ADDR['c2'], 9002) == b'hello'
        # a client with a route to the containers still cannot open a connection straight to them
        ns_run(lab.lan, ['ip', 'route', 'add', SUBNET, 'via', UPLINK])
        try:
            assert not tcp_connects(lab.lan, C_ADDR['c1'], 80, timeout=1.5)
        finally:
            ns_run(lab.lan, ['ip', 'route', 'del', SUBNET, 'via', UPLINK])
    finally:
        inside.close()


def test_accept_policy_warns_and_isolate_drops_other_forwarding(lab):
    """With FORWARD ACCEPT, forwarding makes the host a router: the module warns; isolate stops it."""
    ns_run(lab.host, ['iptables', '-P', 'FORWARD', 'ACCEPT'])
    r = run_nat(lab.host, {'container': lab.containers['c1'], 'publish': ['8080:80']})
    assert any('FORWARD policy is ACCEPT' in w for w in r['warnings'])
    assert tcp_read(lab.lan, CLIENT2, 9003, timeout=1) is None  # nothing listens yet; route check below
    peer = TcpServer(lab.lan2, CLIENT2, 9003)
    try:
        assert tcp_read(lab.lan, CLIENT2, 9003) == b'hello'       # routed LAN -> LAN2 through the host
        r = run_nat(lab.host, {'isolate': True, 'bridge': lab.bridge})
        assert r['changed'] and r['isolate'] == {'ipv4': [lab.bridge]}
        assert tcp_read(lab.lan, CLIENT2, 9003, timeout=1.5) is None
        assert http_get(lab.lan, UPLINK, 8080) == 'c1:80'
        r = run_nat(lab.host, {'isolate': False})
        assert r['changed'] and r['isolate'] == {}
        assert tcp_read(lab.lan, CLIENT2, 9003) == b'hello'
    finally:
        peer.close()


def test_recreated_container_takes_its_mappings_over(lab):
    c2 = lab.containers['c2']
    first = run_nat(lab.host, {'container': c2, 'publish': ['80', '8081:81']})
    lab.recreate('c2', '10.201.0.7')
    try:
        second = run_nat(lab.host, {'container': c2, 'publish': ['80', '8081:81']})
        assert second['changed']
        assert [m['host_port'] for m in second['mappings']] == [m['host_port'] for m in first['mappings']]
        assert set(m['container_ip'] for m in second['mappings']) == {'10.201.0.7'}
        assert http_get(lab.lan, UPLINK, 8081) == 'c2:81'
    finally:
        lab.recreate('c2', '10.201.0.3')


def _answer(where, ip, port, expect, timeout=10.0):
    """http_get until it returns ``expect`` (bounded): the previous test recreated c2, whose new MAC the
    host may not have learned yet. Returns the last answer."""
    deadline = time.monotonic() + timeout
    got = http_get(where, ip, port)
    while got != expect and time.monotonic() < deadline:
        time.sleep(0.5)
        got = http_get(where, ip, port)
    return got


def test_destination_target_and_exclusive(lab):
    r = run_nat(lab.host, {'destination': C_ADDR['c2'] + '/24', 'publish': ['8082:80', '8083:81']})
    assert r['mappings'][0]['target'] == C_ADDR['c2']
    assert _answer(lab.lan, UPLINK, 8083, 'c2:81') == 'c2:81'
    r = run_nat(lab.host, {'destination': C_ADDR['c2'] + '/24', 'publish': ['8082:80'], 'exclusive': True})
    assert [m['host_port'] for m in r['mappings']] == [8082]
    assert http_get(lab.lan, UPLINK, 8083) is None and http_get(lab.lan, UPLINK, 8082) == 'c2:80'


def test_ipv6_publish_and_masquerade(lab):
    """ip_version both: one spec publishes on IPv4 and IPv6; a bracketed IPv6 host address; ip6tables undone."""
    c1 = lab.containers['c1']
    args = {'container': c1, 'ip_version': 'both', 'publish': ['8086:86', '[%s]:8087:86' % UPLINK6],
            'masquerade': ['fd00:200::/64'], 'bridge': lab.bridge}
    r = run_nat(lab.host, args)
    assert not r.get('failed'), r
    assert sorted((m['family'], m['host_ip'], m['host_port'], m['container_ip']) for m in r['mappings']) == [
        ('ipv4', '0.0.0.0', 8086, C_ADDR['c1']), ('ipv6', '::', 8086, C_ADDR6['c1']),
        ('ipv6', UPLINK6, 8087, C_ADDR6['c1'])]
    assert sysctl(lab.host, 'net.ipv6.conf.all.forwarding') == '1'
    assert http_get(lab.lan, UPLINK6, 8086) == 'c1:86'
    assert http_get(lab.lan, UPLINK6, 8087) == 'c1:86'
    assert http_get(lab.lan, UPLINK, 8086) == 'c1:86'
    assert run_nat(lab.host, args)['changed'] is False
    args['state'] = 'absent'
    assert run_nat(lab.host, args)['changed']
    assert save_rules(lab.host, 6) == lab.baseline6
    assert save_rules(lab.host) == lab.baseline
