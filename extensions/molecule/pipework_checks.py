# Copyright: netplumb.pipework developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks shared by the testinfra tests of the Molecule scenarios (extensions/molecule/*/tests/).

Hosts are reached with testinfra's native ssh backend (``ssh://NAME`` with the ssh config that the
scenario's molecule.yml passes as ``--ssh-config``; one ControlMaster per host), never through Ansible.

Checks from inside a container run ``docker exec`` on the host that owns the container, over that
host's SSH connection. In the lab every host shares the controller's dockerd, so a local ``docker exec``
would reach the same container; but on real hosts a container exists only on its own host's dockerd,
and these tests are meant to run unchanged there, so the owning host runs it.

A test module declares what must hold (its containers as ``Box``es, the pairs that must connect, the
hosts' addresses) independently of converge.yml, then calls ``Lab.collect`` once: every probe and every
read runs in parallel (one ``docker exec`` per container with all its probes in the background, one
SSH command per host for its addresses, routes and OVS tables), so the verify step costs about one probe
timeout plus a few SSH round trips, and each test asserts one fact from the collected results.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import subprocess

import pytest
import testinfra

SCENARIO = os.environ.get('MOLECULE_SCENARIO_NAME', '')


def lab_name(scenario=SCENARIO, project=None):
    """The scenario's lab: m<5 hex digits of the checkout's path>-<scenario> (np_lab_name in
    ../config.yml); namespace and container names are machine-wide, so two checkouts must differ."""
    project = os.environ.get('MOLECULE_PROJECT_DIRECTORY', '') if project is None else project
    return f"m{hashlib.sha1(project.encode('utf-8')).hexdigest()[:5]}-{scenario}"


LAB = os.environ.get('NP_LAB_NAME') or lab_name()
# Container names: prepare.yml starts <prefix><short name> (np_prefix in ../config.yml).
PREFIX = os.environ.get('NP_CONTAINER_PREFIX', f'{LAB}-')
HTTP_PORT = 80
# Seconds a probe waits for an answer: the cost of the expected failures (they all run at once).
PROBE_TIMEOUT = 3
_MARK = 'np-probe-rc='
_SPLIT = '@@np-section'


@dataclasses.dataclass(frozen=True)
class Box:
    """A test container: its short name (also its hostname, and the body its httpd serves), the host
    that owns it, the address it must have on ``ifname``, and the VLAN of its OVS port."""

    name: str
    host: str
    address: str  # CIDR
    vlan: int | None = None
    ifname: str = 'eth1'

    @property
    def container(self):
        return PREFIX + self.name

    @property
    def ip(self):
        return self.address.split('/', maxsplit=1)[0]


@dataclasses.dataclass(frozen=True)
class Job:
    """A probe to run: ``kind`` ping or tcp (an HTTP GET) to ``address`` (and ``port``), reported as
    destination ``dst``; a TCP probe succeeds when the HTTP body is ``body`` (default: ``dst``)."""

    kind: str
    dst: str
    address: str
    port: int = HTTP_PORT
    body: str | None = None


@dataclasses.dataclass(frozen=True)
class Probe:
    """One check run inside a container: ping or an HTTP GET over TCP to ``dst`` (a Box name or an
    address)."""

    kind: str
    src: str
    dst: str
    rc: int
    output: str
    expect_body: str | None = None  # the hostname that must answer a TCP probe (default: dst)

    @property
    def answered_by(self):
        """For TCP probes: the hostname in the HTTP body, or None when nothing answered."""
        if self.rc != 0 or ' 200 ' not in self.output:
            return None
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else None

    @property
    def reached(self):
        if self.kind == 'tcp':
            return self.answered_by == (self.expect_body or self.dst)
        return self.rc == 0

    def describe(self):
        return f'{self.kind} {self.src} -> {self.dst}: rc={self.rc}\n{self.output.strip()}'


@dataclasses.dataclass
class HostState:
    """What one SSH command read on a host: ``ip -j`` addresses, routes and links, its OVSDB, its nat
    table and whether it forwards IPv4."""

    addr: list
    routes: list
    links: list
    ovs: dict  # table -> rows, or {} without OVS
    nat: str = ''  # iptables-save -t nat
    ip_forward: bool = False

    def dnat(self):
        """The collection's port mappings in the nat table: [{target, proto, host_ip, host_port, to}]
        (host_ip None: every address)."""
        found = []
        for line in self.nat.splitlines():
            match = re.match(r'-A NETPLUMB-DNAT (?:-d (?P<ip>[\d.]+)/32 )?-p (?P<proto>\w+) .*--dport (?P<port>\d+) '
                             r'.*--comment "?netplumb/target=(?P<target>[^" ]+)"? -j DNAT --to-destination (?P<to>\S+)',
                             line)
            if match:
                found.append({'target': match['target'], 'proto': match['proto'], 'host_ip': match['ip'],
                              'host_port': int(match['port']), 'to': match['to']})
        return found

    def ipv4(self, dev):
        return [f"{a['local']}/{a['prefixlen']}" for link in self.addr if link['ifname'] == dev
                for a in link.get('addr_info', []) if a.get('family') == 'inet']

    def default_routes(self):
        return [(r.get('gateway'), r.get('dev')) for r in self.routes if r.get('dst') == 'default']

    def link(self, dev):
        found = [link for link in self.links if link['ifname'] == dev]
        return found[0] if found else None

    def ovs_bridges(self):
        return {row['name']: row for row in self.ovs.get('Bridge', [])}

    def ovs_ports(self):
        """Port name -> {bridge, tag, trunks, vlan_mode, interfaces, external_ids (of its first interface)}."""
        interfaces = {row['_uuid']: row for row in self.ovs.get('Interface', [])}
        owner = {port: bridge['name'] for bridge in self.ovs.get('Bridge', []) for port in _as_list(bridge['ports'])}
        ports = {}
        for port in self.ovs.get('Port', []):
            ifaces = [interfaces[uuid] for uuid in _as_list(port['interfaces']) if uuid in interfaces]
            ports[port['name']] = {
                'name': port['name'],
                'bridge': owner.get(port['_uuid']),
                'tag': port['tag'] if isinstance(port['tag'], int) else None,
                'trunks': sorted(_as_list(port['trunks'])),
                'vlan_mode': port['vlan_mode'] or None,
                'interfaces': [iface['name'] for iface in ifaces],
                'external_ids': ifaces[0]['external_ids'] if ifaces else {},
            }
        return ports

    def container_port(self, box):
        """The OVS port the collection made for ``box`` (external_ids netplumb_target = container name)."""
        found = [port for port in self.ovs_ports().values()
                 if port['external_ids'].get('netplumb_target') == box.container]
        assert len(found) == 1, f'{box.container}: expected one OVS port, found {found}'
        return found[0]


@dataclasses.dataclass
class BoxState:
    """What one ``docker exec`` read in a container besides its probes."""

    addresses: list  # CIDRs on box.ifname
    routes: list  # lines of `ip -4 route show`


@dataclasses.dataclass
class Results:
    probes: dict  # (kind, src, dst) -> Probe
    hosts: dict  # name -> HostState
    boxes: dict  # name -> BoxState
    ssh: dict  # target -> CompletedProcess of a fresh ssh connection


def _marked(result, label):
    """(rc, output) of a script that ended with echo "<_MARK>$?"; fails the test when it never ran."""
    match = re.search(rf'{_MARK}(\d+)\s*$', result.stdout)
    if not match:
        pytest.fail(f'{label} did not run: rc={result.rc}\n{result.stdout}{result.stderr}')
    return int(match.group(1)), result.stdout[:match.start()]


def _ovs_value(value):
    if isinstance(value, list) and len(value) == 2:
        kind, data = value
        if kind in ('uuid', 'named-uuid'):
            return data
        if kind == 'set':
            return [_ovs_value(item) for item in data]
        if kind == 'map':
            return {key: _ovs_value(item) for key, item in data}
    return value


def _as_list(value):
    return value if isinstance(value, list) else [value]


def parse_ovs_json(out, tables):
    """Rows of ``ovs-vsctl --format=json list T1 -- list T2 ...`` (one JSON document per table)."""
    decoder, pos, result = json.JSONDecoder(), 0, {}
    for table in tables:
        while pos < len(out) and out[pos].isspace():
            pos += 1
        if pos >= len(out):
            break
        doc, pos = decoder.raw_decode(out, pos)
        result[table] = [{head: _ovs_value(cell) for head, cell in zip(doc['headings'], row)}
                         for row in doc['data']]
    return result


class Lab:
    """The scenario's hosts over testinfra's ssh backend, with the scenario's ssh config."""

    OVS_TABLES = ('Bridge', 'Port', 'Interface')

    def __init__(self, ssh_config):
        self.ssh_config = ssh_config

    def host(self, name):
        kwargs = {'ssh_config': self.ssh_config} if self.ssh_config else {}
        return testinfra.get_host(f'ssh://{name}', **kwargs)

    def fresh_ssh(self, target, command='hostname'):
        """Run ``command`` over a NEW ssh connection (no ControlMaster): proves the host answers SSH on
        ``target`` (a name or an address) now, not through a connection opened before a migration."""
        argv = ['ssh']
        if self.ssh_config:
            argv += ['-F', self.ssh_config]
        argv += ['-o', 'ControlMaster=no', '-o', 'ControlPath=none', '-o', 'ConnectTimeout=20',
                 target, command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def host_state(self, name):
        """Addresses, routes, links and the OVSDB of host ``name``, in one SSH command."""
        tables = ' -- '.join(f'list {table}' for table in self.OVS_TABLES)
        out = self.host(name).check_output(
            f'ip -j addr show; echo {_SPLIT}; ip -j -4 route show; echo {_SPLIT}; ip -j -d link show; '
            f'echo {_SPLIT}; ovs-vsctl --timeout=10 --format=json {tables} 2>/dev/null; '
            f'echo {_SPLIT}; iptables-save -t nat 2>/dev/null; '
            f'echo {_SPLIT}; cat /proc/sys/net/ipv4/ip_forward')
        addr, routes, links, ovs, nat, forward = out.split(_SPLIT + '\n')
        return HostState(json.loads(addr or '[]'), json.loads(routes or '[]'), json.loads(links or '[]'),
                         parse_ovs_json(ovs, self.OVS_TABLES), nat, forward.strip() == '1')

    def in_container(self, box, script):
        """Run a shell script in ``box`` on its host; returns (rc of the script, its output).
        Fails the test (rather than reporting "unreachable") when the container itself is missing."""
        marked = f'{script} 2>&1; echo "{_MARK}$?"'
        result = self.host(box.host).run('docker exec %s sh -c %s', box.container, marked)
        return _marked(result, f'docker exec {box.container} on {box.host}')

    def on_host(self, name, script):
        """Run a shell script with busybox sh on host ``name`` (its own network namespace)."""
        marked = f'{script} 2>&1; echo "{_MARK}$?"'
        return _marked(self.host(name).run('busybox sh -c %s', marked), f'on {name}')

    def in_netns(self, netns, script):
        """Run a shell script (busybox sh) in a lab namespace of THIS machine, e.g. the lab's LAN client
        (testinfra's local backend: the lab's switch and client are namespaces of the controller)."""
        marked = f'{script} 2>&1; echo "{_MARK}$?"'
        result = testinfra.get_host('local://').run('ip netns exec %s busybox sh -c %s', netns, marked)
        return _marked(result, f'ip netns exec {netns}')

    def parallel(self, run, label, scripts):
        """Run several shell scripts at once through ``run`` (in_container or in_netns bound to a target):
        one command, each script in the background; returns [(rc, output)] in the order of ``scripts``."""
        runs = ''.join(f'( ( {script} ) >/tmp/np-probe.$$.{i} 2>&1; echo "{_MARK}$?" >>/tmp/np-probe.$$.{i} ) & '
                       for i, script in enumerate(scripts))
        shows = ''.join(f'echo "{_SPLIT} {i}"; cat /tmp/np-probe.$$.{i}; ' for i in range(len(scripts)))
        rc, out = run(f'{runs}wait; {shows}rm -f /tmp/np-probe.$$.*')
        chunks = re.split(rf'^{_SPLIT} (\d+)\n', out, flags=re.M)[1:]
        found = {int(index): body for index, body in zip(chunks[::2], chunks[1::2])}
        results = []
        for i, script in enumerate(scripts):
            match = re.search(rf'{_MARK}(\d+)\s*$', found.get(i, ''))
            if rc != 0 or not match:
                pytest.fail(f'in {label}: {script!r} did not run (rc={rc}):\n{out}')
            results.append((int(match.group(1)), found[i][:match.start()]))
        return results

    # busybox applets by name: the same tools in the containers, on the hosts and in lab namespaces
    @staticmethod
    def ping_script(address):
        return f'busybox ping -c 1 -W {PROBE_TIMEOUT} {address}'

    @staticmethod
    def http_script(address, port=HTTP_PORT):
        """An HTTP GET with busybox nc; the test containers' httpd answers with their hostname."""
        request = r'GET / HTTP/1.0\r\n\r\n'
        return f"printf '{request}' | busybox nc -w {PROBE_TIMEOUT} {address} {port}"

    def probe_script(self, job):
        return self.ping_script(job.address) if job.kind == 'ping' else self.http_script(job.address, job.port)

    def _run_box(self, src, boxes, kinds, extra):
        """All probes from container ``src`` (to each other Box, and its ``extra`` ones) at once, plus
        its addresses and routes."""
        box = boxes[src]
        jobs = [Job(kind, dst, boxes[dst].ip) for kind in kinds for dst in boxes if dst != src]
        jobs += list(extra.get(src, []))
        scripts = [self.probe_script(job) for job in jobs]
        scripts += [f'ip -o -4 addr show dev {box.ifname}', 'ip -4 route show']
        outcomes = self.parallel(lambda script: self.in_container(box, script), box.container, scripts)
        probes = [Probe(job.kind, src, job.dst, rc, out, job.body) for job, (rc, out) in zip(jobs, outcomes)]
        addr_out, route_out = outcomes[-2][1], outcomes[-1][1]
        return probes, BoxState(re.findall(r'inet (\S+)', addr_out),
                                [line.strip() for line in route_out.strip().splitlines()])

    def _run_outside(self, label, where, jobs):
        kind, target = where
        run = {'netns': self.in_netns, 'host': self.on_host}[kind]
        scripts = [self.probe_script(job) for job in jobs]
        outcomes = self.parallel(lambda script: run(target, script), f'{kind} {target}', scripts)
        return [Probe(job.kind, label, job.dst, rc, out, job.body) for job, (rc, out) in zip(jobs, outcomes)]

    def collect(self, boxes, hosts=(), kinds=('ping', 'tcp'), extra=None, outside=None, ssh_targets=()):
        """Everything a scenario's tests assert, gathered in parallel:

        - every ordered pair of ``boxes`` (short name -> Box) for each of ``kinds``, plus ``extra``
          probes ({src: [Job]}); each source container runs all its probes at once, and reports its
          addresses and routes;
        - ``outside`` probes ({label: (('netns', NAME) or ('host', HOST), [Job])}): from a lab namespace
          of this machine (the lab's LAN client) or from a host itself; keyed (kind, label, job.dst);
        - the state of each of ``hosts`` (one SSH command each);
        - a fresh SSH connection to each of ``ssh_targets``.
        """
        extra, outside = extra or {}, outside or {}
        for name in sorted(set(hosts) | {box.host for box in boxes.values()}):
            self.host(name).run('true')  # open each ControlMaster before the parallel work
        workers = len(boxes) + len(outside) + len(hosts) + len(ssh_targets) + 1
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            box_futures = {src: pool.submit(self._run_box, src, boxes, kinds, extra) for src in boxes}
            netns_futures = [pool.submit(self._run_outside, label, where, jobs) for label, (where, jobs) in outside.items()]
            host_futures = {name: pool.submit(self.host_state, name) for name in hosts}
            ssh_futures = {target: pool.submit(self.fresh_ssh, target) for target in ssh_targets}
            results = Results({}, {name: f.result() for name, f in host_futures.items()}, {},
                              {target: f.result() for target, f in ssh_futures.items()})
            for src, future in box_futures.items():
                probes, state = future.result()
                results.boxes[src] = state
                results.probes.update({(p.kind, p.src, p.dst): p for p in probes})
            for future in netns_futures:
                results.probes.update({(p.kind, p.src, p.dst): p for p in future.result()})
        return results


def pairs(boxes, reachable):
    """(src, dst, expected) for every ordered pair; ``reachable`` holds unordered pairs that connect."""
    links = {frozenset(pair) for pair in reachable}
    return [(src, dst, frozenset((src, dst)) in links) for src in boxes for dst in boxes if src != dst]


def assert_reach(probe, expected):
    if expected:
        assert probe.reached, f'expected to reach, did not:\n{probe.describe()}'
    elif probe.kind == 'tcp':
        assert probe.answered_by is None, f'expected no answer, got one:\n{probe.describe()}'
    else:
        assert probe.rc != 0, f'expected no reply, got one:\n{probe.describe()}'


def assert_ssh(result, hostname):
    assert (result.returncode, result.stdout.strip()) == (0, hostname), \
        f'ssh rc={result.returncode} stdout={result.stdout!r} stderr={result.stderr!r}'
