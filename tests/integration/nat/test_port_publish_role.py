"""Role port_publish through playbooks/port_publish.yml, end to end: docker_veth wires the containers onto a
new Linux bridge with a gateway address, nat_portmap publishes the article's -p formats (scenario S0)."""

from __future__ import annotations

import os

from natlab import (CLIENT, REPO, UPLINK, TcpServer, UdpEcho, UdpFlow, http_get, ns_run, run, run_playbook,
                    save_rules, tcp_read)

PLAYBOOK = os.path.join(REPO, 'playbooks', 'port_publish.yml')


def test_role_publishes_masquerades_is_idempotent_and_undoes(lab):
    r1 = lab.start_container('r1', wire=False)
    r2 = lab.start_container('r2', wire=False)
    bridge = 'brp' + lab.tag
    extra = {
        'port_publish_hosts': 'localhost',
        'port_publish_bridge': bridge,
        'port_publish_bridge_address': '10.202.0.1/24',
        'port_publish_containers': [
            {'container': r1, 'address': '10.202.0.2/24', 'publish': [
                '%s:8080:80' % UPLINK, '%s::81' % UPLINK, '8081:82', '80', '8000-8002:80-82', '5300:5300/udp']},
            {'container': r2, 'address': '10.202.0.3/24', 'publish': ['9000:80'], 'localhost': True},
        ],
    }
    links_before = lab.host_links()
    echo = UdpEcho(lab.pids['r1'], 5300, 'r1-udp')
    try:
        rc, out, recap = run_playbook(lab.host, PLAYBOOK, extra, check=True)
        assert rc == 0, out
        assert recap['changed'] == 2, out
        assert save_rules(lab.host) == lab.baseline and lab.host_links() == links_before

        rc, out, recap = run_playbook(lab.host, PLAYBOOK, extra)
        assert rc == 0, out
        assert recap['changed'] == 2, out
        expect = {8080: 'r1:80', 32768: 'r1:81', 8081: 'r1:82', 32769: 'r1:80', 8000: 'r1:80', 8001: 'r1:81',
                  8002: 'r1:82', 9000: 'r2:80'}
        for port, body in expect.items():
            assert http_get(lab.lan, UPLINK, port) == body, 'host port %d\n%s' % (port, out)
        assert http_get(lab.host, '127.0.0.1', 9000) == 'r2:80'
        assert '"host_port": 32768' in out  # the post task shows the mappings, free ports resolved
        flow = UdpFlow(lab.lan, UPLINK, 5300, 40003)
        try:
            assert flow.wait_for('r1-udp')
        finally:
            flow.close()
        peer = TcpServer(lab.lan, CLIENT, 9004)
        try:
            assert http_get(lab.pids['r2'], UPLINK, 8080) == 'r1:80'           # hairpin to a neighbour
            assert http_get(lab.pids['r1'], UPLINK, 8080) == 'r1:80'           # hairpin to itself
            assert http_get(lab.pids['r1'], '10.202.0.1', 8081) == 'r1:82'     # ... through the gateway
            assert tcp_read(lab.pids['r1'], CLIENT, 9004) == b'hello'
            assert peer.peers == [UPLINK]                                      # masqueraded
        finally:
            peer.close()

        rules = save_rules(lab.host)
        rc, out, recap = run_playbook(lab.host, PLAYBOOK, extra)
        assert rc == 0, out
        assert recap['changed'] == 0, out
        assert save_rules(lab.host) == rules

        extra['port_publish_state'] = 'absent'
        rc, out, recap = run_playbook(lab.host, PLAYBOOK, extra)
        assert rc == 0, out
        assert save_rules(lab.host) == lab.baseline
        assert http_get(lab.lan, UPLINK, 8080) is None
        for name in ('r1', 'r2'):
            assert run(['nsenter', '-t', str(lab.pids[name]), '-n', 'ip', 'link', 'show', 'eth1'],
                       check=False).returncode != 0
        ns_run(lab.host, ['ip', 'link', 'del', bridge], check=False)
        assert lab.host_links() == links_before
        rc, out, recap = run_playbook(lab.host, PLAYBOOK, extra)
        assert rc == 0 and recap['changed'] == 0, out
    finally:
        echo.close()
        lab.remove_container('r1')
        lab.remove_container('r2')
        ns_run(lab.host, ['ip', 'link', 'del', bridge], check=False)
