"""A throwaway NAT lab for nat_portmap: a "host" network namespace with Docker's footprint, a LAN client,
a neighbour, and Docker containers wired onto a Linux bridge inside the host namespace.

    LAN client (ns L) 192.168.201.2 ---veth--- 192.168.201.1 host (ns H) bridge npbrXXXXXX 10.201.0.1/24
    second LAN  (ns M) 192.168.202.2 ---veth--- 192.168.202.1                 |-- c1 10.201.0.2 (eth1)
                                                                              |-- c2 10.201.0.3 (eth1)
                                                                              |-- neighbour ns N 10.201.0.9

The module runs inside H (``ip netns exec H ansible-playbook -c local``), so every iptables rule, sysctl
and conntrack entry it touches is H's own. Clients and servers are sockets this test process opens inside
the namespaces (setns in this thread, no fork); TCP servers in the containers are busybox httpd.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import tempfile
import threading
import time

from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netns import Namespace, entered

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VENV_BIN = os.path.join(os.environ.get('NP_VENV', os.path.join(REPO, '.build', 'venv')), 'bin')
IMAGE = os.environ.get('NP_TEST_IMAGE', 'netplumb/busybox:test')
TARGET_PYTHON = os.environ.get('NP_TARGET_PYTHON', '/usr/bin/python3')

UPLINK = '192.168.201.1'
CLIENT = '192.168.201.2'
UPLINK2 = '192.168.202.1'
CLIENT2 = '192.168.202.2'
GATEWAY = '10.201.0.1'
SUBNET = '10.201.0.0/24'
NEIGHBOUR = '10.201.0.9'
C_ADDR = {'c1': '10.201.0.2', 'c2': '10.201.0.3'}
UPLINK6 = 'fd00:201::1'
CLIENT6 = 'fd00:201::2'
C_ADDR6 = {'c1': 'fd00:200::2', 'c2': 'fd00:200::3'}
EMPTY6 = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' \
         '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n'

# What Docker leaves in a host's iptables (the module must leave it as it is), and a hand-written rule.
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
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 172.17.0.2:80
COMMIT
"""


def run(argv, check=True, **kwargs):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def suffix():
    return secrets.token_hex(3)


def ns_run(ns, argv, check=True):
    return run(['ip', 'netns', 'exec', ns] + list(argv), check=check)


def save_rules(ns, family=4):
    """iptables-save of a namespace without comments and counters, for before/after comparisons."""
    tool = 'iptables-save' if family == 4 else 'ip6tables-save'
    out = ns_run(ns, [tool]).stdout
    lines = []
    for line in out.splitlines():
        if line.startswith('#'):
            continue
        lines.append(re.sub(r'\[\d+:\d+\]', '[0:0]', line))
    return '\n'.join(lines)


def sysctl(ns, key, value=None):
    path = '/proc/sys/' + key.replace('.', '/')
    if value is None:
        return ns_run(ns, ['cat', path]).stdout.strip()
    ns_run(ns, ['sh', '-c', 'echo %s > %s' % (value, path)])
    return value


# -- sockets inside namespaces -------------------------------------------------------------------------

def ns_path(ns_or_pid):
    if isinstance(ns_or_pid, int):
        return '/proc/%d/ns/net' % ns_or_pid
    return ns_or_pid if ns_or_pid.startswith('/') else '/run/netns/%s' % ns_or_pid


def socket_in(where, family=socket.AF_INET, kind=socket.SOCK_STREAM):
    namespace = Namespace(ns_path(where), 'test')
    try:
        with entered(namespace):
            return socket.socket(family, kind)
    finally:
        namespace.close()


def http_get(where, ip, port, timeout=3.0):
    """GET / from inside ``where``; the body, or None when nothing answers."""
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    sock = socket_in(where, family)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
        sock.sendall(b'GET / HTTP/1.0\r\n\r\n')
        data = b''
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b'\r\n\r\n', 1)[-1].decode().strip()
    except OSError:
        return None
    finally:
        sock.close()


def tcp_connects(where, ip, port, timeout=2.0):
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    sock = socket_in(where, family)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


class TcpServer:
    """A listener inside a namespace that records its peers' addresses and sends a token."""

    def __init__(self, where, ip, port, token=b'hello'):
        self.sock = socket_in(where)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.token = token
        self.peers = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self.peers.append(peer[0])
            try:
                conn.sendall(self.token)
            finally:
                conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def tcp_read(where, ip, port, timeout=2.0):
    sock = socket_in(where)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
        return sock.recv(100)
    except OSError:
        return None
    finally:
        sock.close()


class UdpEcho:
    """A UDP server inside a namespace: answers every datagram with ``name`` and counts them."""

    def __init__(self, where, port, name):
        self.sock = socket_in(where, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('0.0.0.0', port))
        self.sock.settimeout(0.2)
        self.name = name.encode()
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                continue
            self.received += 1
            self.sock.sendto(self.name, peer)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class UdpFlow:
    """One long-lived UDP flow (fixed source port) from a namespace, a datagram every 50 ms."""

    def __init__(self, where, ip, port, src_port):
        self.sock = socket_in(where, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('0.0.0.0', src_port))
        self.sock.settimeout(0.05)
        self.dest = (ip, port)
        self.replies = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.sock.sendto(b'ping', self.dest)
            except OSError:
                pass
            try:
                data, peer = self.sock.recvfrom(2048)
                self.replies.append(data.decode())
            except OSError:
                pass
            time.sleep(0.05)

    def wait_for(self, name, timeout=10.0):
        """Wait (bounded) until a reply from ``name`` arrives; True if it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name in self.replies:
                return True
            time.sleep(0.05)
        return name in self.replies

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# -- Ansible inside the host namespace -------------------------------------------------------------

def ansible_env():
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(REPO, '.build', 'collections'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_PYTHON_INTERPRETER': TARGET_PYTHON,
        'ANSIBLE_LOCALHOST_WARNING': 'False',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False',
        'ANSIBLE_DEPRECATION_WARNINGS': 'False',
    })
    return env


def run_nat(ns, args, check=False, diff=False, module='netplumb.pipework.nat_portmap'):
    """Run one module task inside ``ns``; return its registered result (``failed`` set on failure)."""
    workdir = tempfile.mkdtemp(prefix='np-nat-')
    out_path = os.path.join(workdir, 'result.json')
    play = [{
        'hosts': 'localhost', 'gather_facts': False,
        'tasks': [
            {'name': 'under test', module: args, 'register': 'r', 'ignore_errors': True},
            {'name': 'save', 'ansible.builtin.copy': {'content': '{{ r | to_json }}', 'dest': out_path},
             'check_mode': False, 'diff': False},
        ],
    }]
    path = os.path.join(workdir, 'play.yml')
    with open(path, 'w') as f:
        json.dump(play, f)
    argv = ['ip', 'netns', 'exec', ns, os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,',
            '-c', 'local', path]
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), cwd=REPO, check=False)
    try:
        with open(out_path) as f:
            result = json.load(f)
    except (IOError, ValueError):
        raise AssertionError('no task result:\n%s\n%s' % (proc.stdout, proc.stderr))
    finally:
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
    result['_stdout'] = proc.stdout
    return result


def run_playbook(ns, playbook, extra_vars, check=False):
    """ansible-playbook inside ``ns``; (rc, output, recap of localhost)."""
    fd, path = tempfile.mkstemp(suffix='.json')
    with os.fdopen(fd, 'w') as f:
        json.dump(extra_vars, f)
    argv = ['ip', 'netns', 'exec', ns, os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,',
            '-c', 'local', playbook, '-e', '@' + path]
    if check:
        argv.append('--check')
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), cwd=REPO, check=False)
    finally:
        os.unlink(path)
    recap = {}
    for line in proc.stdout.splitlines():
        if ' : ok=' in line:
            for field in line.split(':', 1)[1].split():
                key, value = field.split('=', 1)
                recap[key] = int(value)
    return proc.returncode, proc.stdout + proc.stderr, recap


# -- the lab ---------------------------------------------------------------------------------------

class Lab:
    """Namespaces, a bridge and containers; ``reset()`` puts the host namespace back to its baseline."""

    def __init__(self):
        tag = suffix()
        self.tag = tag
        self.host = 'np-nat-h' + tag
        self.lan = 'np-nat-l' + tag
        self.lan2 = 'np-nat-m' + tag
        self.nbr = 'np-nat-n' + tag
        self.bridge = 'npbr' + tag
        self.containers = {}
        self.pids = {}
        self.ports = {}  # container -> host-side veth

    # creation
    def up(self):
        for ns in (self.host, self.lan, self.lan2, self.nbr):
            run(['ip', 'netns', 'add', ns])
            ns_run(ns, ['ip', 'link', 'set', 'lo', 'up'])
        self._uplink(self.lan, 'npu' + self.tag, UPLINK, CLIENT)
        ns_run(self.host, ['ip', '-6', 'addr', 'add', UPLINK6 + '/64', 'dev', 'npu' + self.tag, 'nodad'])
        ns_run(self.lan, ['ip', '-6', 'addr', 'add', CLIENT6 + '/64', 'dev', 'eth0', 'nodad'])
        self._uplink(self.lan2, 'npm' + self.tag, UPLINK2, CLIENT2)
        ns_run(self.host, ['ip', 'link', 'add', self.bridge, 'type', 'bridge'])
        ns_run(self.host, ['ip', 'addr', 'add', GATEWAY + '/24', 'dev', self.bridge])
        ns_run(self.host, ['ip', '-6', 'addr', 'add', 'fd00:200::1/64', 'dev', self.bridge, 'nodad'])
        ns_run(self.host, ['ip', 'link', 'set', self.bridge, 'up'])
        # the neighbour: no loopback route of its own, so it can send 127.0.0.1 to the host (the attack)
        ns_run(self.host, ['ip', 'link', 'add', 'npn' + self.tag, 'type', 'veth', 'peer', 'name', 'eth1',
                           'netns', self.nbr])
        ns_run(self.host, ['ip', 'link', 'set', 'npn' + self.tag, 'master', self.bridge, 'up'])
        ns_run(self.nbr, ['ip', 'addr', 'add', NEIGHBOUR + '/24', 'dev', 'eth1'])
        ns_run(self.nbr, ['ip', 'link', 'set', 'eth1', 'up'])
        ns_run(self.nbr, ['ip', 'link', 'set', 'lo', 'down'])
        ns_run(self.nbr, ['ip', 'addr', 'flush', 'dev', 'lo'])
        ns_run(self.nbr, ['ip', 'route', 'add', '127.0.0.0/8', 'via', GATEWAY, 'dev', 'eth1'])
        sysctl(self.nbr, 'net.ipv4.conf.eth1.route_localnet', 1)
        for name in C_ADDR:
            self.start_container(name)
        self.baseline = None
        self.reset()

    def _uplink(self, ns, host_if, host_ip, client_ip):
        ns_run(self.host, ['ip', 'link', 'add', host_if, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
        ns_run(self.host, ['ip', 'addr', 'add', host_ip + '/24', 'dev', host_if])
        ns_run(self.host, ['ip', 'link', 'set', host_if, 'up'])
        ns_run(ns, ['ip', 'addr', 'add', client_ip + '/24', 'dev', 'eth0'])
        ns_run(ns, ['ip', 'link', 'set', 'eth0', 'up'])
        # the clients can reach the host, but have no route to the containers' subnet
        ns_run(ns, ['ip', 'route', 'add', '192.168.200.0/22', 'via', host_ip])

    def start_container(self, name, wire=True):
        cname = 'np-nat-%s-%s' % (name, self.tag)
        run(['docker', 'rm', '-f', cname], check=False)
        run(['docker', 'run', '-d', '--name', cname, '--net=none', '--init', IMAGE, 'sleep', '1000000'])
        self.containers[name] = cname
        pid = int(run(['docker', 'inspect', '-f', '{{.State.Pid}}', cname]).stdout)
        self.pids[name] = pid
        if wire:
            self.wire(name)
        # busybox httpd on 80 (and 81, 82 for ranges), each answering with its name and port
        # and, where IPv6 is on (wired containers), on [::]:86
        script = ('for p in 80 81 82 86; do mkdir -p /www$p; echo %s:$p > /www$p/index.html; done; '
                  'for p in 80 81 82; do httpd -p $p -h /www$p; done; httpd -p [::]:86 -h /www86 || true' % name)
        run(['docker', 'exec', cname, 'sh', '-c', script])
        return cname

    def wire(self, name):
        """Attach a container on eth1 with its address and the bridge as gateway (what docker_veth does)."""
        pid = self.pids[name]
        host_if = 'npc%s%s' % (name[-1], self.tag)
        # a removed container's namespace (and the veth in it) goes away asynchronously
        ns_run(self.host, ['ip', 'link', 'del', host_if], check=False)
        ns_run(self.host, ['ip', 'link', 'add', host_if, 'type', 'veth', 'peer', 'name', 'eth1', 'netns',
                           '/proc/%d/ns/net' % pid])
        ns_run(self.host, ['ip', 'link', 'set', host_if, 'master', self.bridge, 'up'])
        for argv in (['ip', 'addr', 'add', C_ADDR[name] + '/24', 'dev', 'eth1'], ['ip', 'link', 'set', 'eth1', 'up'],
                     ['ip', 'link', 'set', 'lo', 'up'], ['ip', 'route', 'add', 'default', 'via', GATEWAY],
                     # Docker turns IPv6 off in --net=none containers
                     ['sh', '-c', 'echo 0 > /proc/sys/net/ipv6/conf/all/disable_ipv6; '
                                  'echo 0 > /proc/sys/net/ipv6/conf/eth1/disable_ipv6'],
                     ['ip', '-6', 'addr', 'add', C_ADDR6[name] + '/64', 'dev', 'eth1', 'nodad'],
                     ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:200::1']):
            run(['nsenter', '-t', str(pid), '-n'] + argv)
        self.ports[name] = host_if

    def recreate(self, name, address):
        """Remove and start a container under the same name with another address.

        The host's neighbour entry for an address that a new container (new MAC) takes over stays valid for
        up to half a minute and sends the next test's packets to the old MAC: flush the bridge's entries.
        """
        C_ADDR[name] = address
        out = self.start_container(name)
        ns_run(self.host, ['ip', 'neigh', 'flush', 'dev', self.bridge], check=False)
        return out

    # state
    def reset(self):
        """Docker's footprint only, forwarding off, hairpin off, no conntrack entries."""
        proc = subprocess.run(['ip', 'netns', 'exec', self.host, 'iptables-restore'], input=DOCKER_BASELINE,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        proc = subprocess.run(['ip', 'netns', 'exec', self.host, 'ip6tables-restore'], input=EMPTY6,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        sysctl(self.host, 'net.ipv6.conf.all.forwarding', 0)
        ns_run(self.host, ['conntrack', '-F'], check=False)
        sysctl(self.host, 'net.ipv4.ip_forward', 0)
        sysctl(self.host, 'net.ipv4.conf.%s.route_localnet' % self.bridge, 0)
        for host_if in self.ports.values():
            ns_run(self.host, ['ip', 'link', 'set', host_if, 'type', 'bridge_slave', 'hairpin', 'off'])
        self.baseline = save_rules(self.host)
        self.baseline6 = save_rules(self.host, 6)

    def hairpin(self, name):
        out = ns_run(self.host, ['ip', '-d', '-j', 'link', 'show', self.ports[name]]).stdout
        return json.loads(out)[0]['linkinfo']['info_slave_data']['hairpin']

    def remove_container(self, name):
        run(['docker', 'rm', '-f', self.containers.pop(name)], check=False)
        self.pids.pop(name, None)

    def host_links(self):
        out = ns_run(self.host, ['ip', '-j', 'link', 'show']).stdout
        return sorted(link['ifname'] for link in json.loads(out))

    def down(self):
        for cname in self.containers.values():
            run(['docker', 'rm', '-f', cname], check=False)
        for ns in (self.host, self.lan, self.lan2, self.nbr):
            run(['ip', 'netns', 'del', ns], check=False)
