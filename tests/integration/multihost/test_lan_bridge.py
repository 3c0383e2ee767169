"""Scenario S1 through playbooks/lan_bridge.yml on a real SSH lab (lab/lab.py): host A's enp0s3 holds
192.168.1.102/24 (gateway 192.168.1.1); the play bridges it into br0 and puts container test1 on the LAN as
192.168.1.150/24 with the host's own default gateway.

Check mode changes nothing; after the run the LAN client reaches the container at its LAN address (ping and
TCP), the container reaches the gateway (ping and TCP), the host answers SSH; a second run - the role
included from a user's own playbook (include_role) - reports changed=0; state=absent gives the uplink back
exactly and removes the attachment and the bridge.
"""

from __future__ import annotations

import secrets
import subprocess
import textwrap

import connectivity_matrix as cm  # scripts/, put on sys.path by this directory's conftest

HOST, UPLINK, BRIDGE = 'hostA', 'enp0s3', 'br0'
HOST_IP, GATEWAY, CLIENT, CONTAINER_IP = '192.168.1.102', '192.168.1.1', '192.168.1.200', '192.168.1.150'

CLIENT_GET = textwrap.dedent('''
    import sys, urllib.request
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
''')
# A one-shot HTTP server: answers the first request with the token, then exits.
ONE_SHOT_SERVER = textwrap.dedent('''
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(20)
    print('ready', flush=True)
    c, _ = s.accept(); c.recv(1000)
    c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n' + sys.argv[3].encode()); c.close()
''')

USER_PLAYBOOK = textwrap.dedent('''\
    ---
    - name: A user's own play that includes the role
      hosts: all
      gather_facts: false
      tasks:
        - name: Put the containers on the LAN
          ansible.builtin.include_role:
            name: netplumb.pipework.lan_bridge
''')


def client_reaches_container_tcp(env, container):
    servers = cm.Servers([cm.Node(container, CONTAINER_IP, 'lan')])
    try:
        got = env.lab.exec('client', ['python3', '-c', CLIENT_GET, 'http://%s:%d/' % (CONTAINER_IP, servers.port)],
                           check=False)
        return servers.tokens[container] in got.stdout
    finally:
        servers.stop()


def container_reaches_gateway_tcp(env, container):
    port, token = 20000 + secrets.randbelow(20000), 'np-gw-%s' % secrets.token_hex(4)
    server = subprocess.Popen(env.lab.exec_argv('switch', ['python3', '-c', ONE_SHOT_SERVER, GATEWAY, str(port), token]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        got = env.container(container, 'timeout', '5', 'wget', '-q', '-O', '-', 'http://%s:%d/' % (GATEWAY, port))
        return token in got.stdout
    finally:
        try:
            server.wait(timeout=25)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_s1_lan_bridge(make_lab, tmp_path):
    env = make_lab(names=[HOST], uplink=UPLINK, subnet='192.168.1.0/24', addresses=[HOST_IP], gateway=GATEWAY,
                   client=CLIENT)
    test1 = env.start('t1')
    # No gateway given: the role uses the host's own default gateway (192.168.1.1), as pipework's @GW would.
    env.write_vars(host_vars={HOST: {'lan_bridge_uplink': UPLINK, 'lan_bridge_bridge': BRIDGE,
                                     'lan_bridge_containers': [{'container': test1,
                                                                'address': CONTAINER_IP + '/24'}]}})
    before = env.network(HOST, UPLINK)
    assert before['addresses'] == [HOST_IP + '/24']

    run = env.playbook('lan_bridge', how='repo', check=True)
    assert run.rc == 0 and run.changed(HOST) > 0, run.output
    assert env.network(HOST, UPLINK) == before, 'check mode changed the host'
    assert env.ipj(HOST, 'link', 'show', 'dev', BRIDGE) == [], 'check mode created the bridge'
    assert env.container_links(test1) == ['lo']

    run = env.playbook('lan_bridge', how='playbooks')
    assert run.rc == 0 and run.changed(HOST) > 0, run.output
    assert env.global_addresses(HOST, BRIDGE) == [HOST_IP + '/24']
    assert env.global_addresses(HOST, UPLINK) == []
    assert env.ipj(HOST, 'link', 'show', 'dev', UPLINK)[0].get('master') == BRIDGE
    routes = env.container(test1, 'ip', 'route').stdout
    assert 'default via %s dev eth1' % GATEWAY in routes, routes

    lan = env.lab.exec('client', ['ping', '-c', '1', '-W', '2', CONTAINER_IP], check=False)
    assert lan.returncode == 0, 'the LAN client does not reach %s:\n%s' % (CONTAINER_IP, lan.stdout)
    assert client_reaches_container_tcp(env, test1), 'no TCP from the LAN client to the container'
    assert cm.ping(test1, GATEWAY), 'the container does not reach the gateway'
    assert container_reaches_gateway_tcp(env, test1), 'no TCP from the container to the gateway'
    ok, checks = env.ssh_ok()
    assert ok, checks
    assert env.lab.exec('client', ['ping', '-c', '1', '-W', '2', HOST_IP], check=False).returncode == 0

    playbook = tmp_path / 'site.yml'
    playbook.write_text(USER_PLAYBOOK)
    run = env.playbook('site', how=str(playbook))
    assert run.rc == 0 and run.changed(HOST) == 0, run.output

    run = env.playbook('lan_bridge', how='fqcn', extra_vars={'lan_bridge_state': 'absent'})
    assert run.rc == 0 and run.changed(HOST) > 0, run.output
    assert env.network(HOST, UPLINK) == before, run.output
    assert env.ipj(HOST, 'link', 'show', 'dev', BRIDGE) == [], 'the bridge is still there'
    assert env.container_links(test1) == ['lo']
    ok, checks = env.ssh_ok()
    assert ok, checks
