"""Who reaches whom, measured from inside the containers: ping and TCP for every ordered pair.

Used by scripts/demo.sh (scenario S3) and by the integration tests. A node is a container with the address
to reach it at and a group; a pair is expected to connect exactly when both nodes are in the same group (for
S3 the group is the VLAN: one IP subnet, isolation at layer 2).

    scripts/connectivity_matrix.py --node test1,192.168.0.1,100,hostA --node test2,192.168.0.2,200,hostA \\
        --node test3,192.168.0.3,100,hostB --node test4,192.168.0.4,200,hostB [--lab s3] [--json]

Ping: ``ping -c 1 -W 2`` in the source container. TCP: each destination serves a random token with busybox
``httpd`` on a random port (started for the measurement, stopped after it, by PID); the source must read that
exact token with ``wget``, so an answer from the wrong container does not count. A failed probe is retried
once, so a first packet lost to ARP does not decide a cell. With ``--lab NAME`` each host of that lab must
also answer SSH on its address (a real ``ssh`` through the lab's relay). Exit status 0 when every cell (and
every SSH check) is as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import secrets
import subprocess
import sys
from dataclasses import asdict, dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WWW = '/tmp/np-matrix'


@dataclass(frozen=True)
class Node:
    name: str      # container name
    address: str   # IP address to reach it at (a /prefix is ignored)
    group: str     # nodes in one group are expected to reach each other (S3: the VLAN)
    host: str = ''  # where it runs, for the display only

    @property
    def ip(self):
        return self.address.split('/')[0]


@dataclass
class Cell:
    src: str
    dst: str
    expected: bool
    ping: bool
    tcp: bool

    @property
    def ok(self):
        return self.ping == self.expected and self.tcp == self.expected


@dataclass
class SshCheck:
    host: str
    address: str
    ok: bool
    detail: str = ''


@dataclass
class Matrix:
    nodes: list
    cells: dict = field(default_factory=dict)    # (src, dst) -> Cell
    ssh: list = field(default_factory=list)      # [SshCheck]

    @property
    def ok(self):
        return all(c.ok for c in self.cells.values()) and all(s.ok for s in self.ssh)

    def mismatches(self):
        return [c for c in self.cells.values() if not c.ok]

    def to_dict(self):
        return {'ok': self.ok,
                'nodes': [asdict(n) for n in self.nodes],
                'cells': [dict(asdict(c), ok=c.ok) for c in self.cells.values()],
                'ssh': [asdict(s) for s in self.ssh]}


def _docker_exec(container, argv, timeout=30):
    try:
        return subprocess.run(['docker', 'exec', container] + list(argv), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, '', 'timed out')


def _retry(probe, attempts=2):
    return any(probe() for attempt in range(attempts))


def ping(src, dst_ip, attempts=2):
    return _retry(lambda: _docker_exec(src, ['ping', '-c', '1', '-W', '2', dst_ip]).returncode == 0, attempts)


def tcp(src, dst_ip, port, token, attempts=2):
    def once():
        got = _docker_exec(src, ['timeout', '4', 'wget', '-q', '-O', '-', 'http://%s:%d/' % (dst_ip, port)])
        return got.returncode == 0 and token in got.stdout
    return _retry(once, attempts)


class Servers:
    """A busybox httpd per destination container serving that container's token; stopped by PID."""

    def __init__(self, nodes, port=None):
        self.port = port or 20000 + secrets.randbelow(20000)
        self.tokens = {}
        self.pids = {}
        for node in nodes:
            self.start(node.name)

    def start(self, name):
        token = 'np-matrix-%s-%s' % (name, secrets.token_hex(4))
        script = ('mkdir -p %s && echo %s > %s/index.html && '
                  '{ httpd -f -p %d -h %s </dev/null >/dev/null 2>&1 & echo $!; }' % (WWW, token, WWW, self.port, WWW))
        proc = _docker_exec(name, ['sh', '-c', script])
        if proc.returncode != 0 or not proc.stdout.strip().isdigit():
            raise RuntimeError('cannot start httpd in %s: %s%s' % (name, proc.stdout, proc.stderr))
        self.tokens[name] = token
        self.pids[name] = proc.stdout.strip()

    def stop(self):
        for name, pid in self.pids.items():
            _docker_exec(name, ['sh', '-c', 'kill %s; rm -rf %s' % (pid, WWW)])
        self.pids = {}


def measure(nodes, pairs=None, workers=6, attempts=2, port=None):
    """Ping and TCP for every ordered pair of ``nodes`` (or only ``pairs``, a list of (src, dst) names)."""
    by_name = {n.name: n for n in nodes}
    if pairs is None:
        pairs = [(a.name, b.name) for a in nodes for b in nodes if a.name != b.name]
    matrix = Matrix(nodes=list(nodes))
    servers = Servers([by_name[d] for d in sorted({dst for src, dst in pairs})], port=port)
    try:
        def one(pair):
            src, dst = by_name[pair[0]], by_name[pair[1]]
            return Cell(src.name, dst.name, src.group == dst.group,
                        ping(src.name, dst.ip, attempts),
                        tcp(src.name, dst.ip, servers.port, servers.tokens[dst.name], attempts))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for cell in pool.map(one, pairs):
                matrix.cells[(cell.src, cell.dst)] = cell
    finally:
        servers.stop()
    return matrix


def lab_module():
    """lab/lab.py, loaded by path under the name the lab's README uses (once per process)."""
    module = sys.modules.get('netplumb_lab')
    if module is None:
        spec = importlib.util.spec_from_file_location('netplumb_lab', os.path.join(REPO, 'lab', 'lab.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
        spec.loader.exec_module(module)
    return module


def load_lab(name):
    return lab_module().Lab.load(name)


def check_ssh(lab, timeout=30):
    """Each host of ``lab`` must answer a real SSH login on its address and be the host it claims to be."""
    checks = []
    for host in lab.hosts:
        try:
            proc = subprocess.run(lab.ssh_argv(host.name, ['hostname']), capture_output=True, text=True,
                                  timeout=timeout, check=False)
            ok = proc.returncode == 0 and proc.stdout.strip() == host.name
            detail = proc.stdout.strip() or proc.stderr.strip()
        except subprocess.TimeoutExpired:
            ok, detail = False, 'no answer within %d s' % timeout
        checks.append(SshCheck(host.name, host.address, ok, detail))
    return checks


def _yn(value):
    return 'yes' if value else 'no'


def render(matrix, title='Connectivity from inside the containers', group_name='group'):
    """The matrix as text: each cell is "ping/tcp (expected)", "!!" marks a cell that is not as expected."""
    nodes = matrix.nodes
    labels = ['%s %s%s' % (n.name, n.ip, (' @' + n.host) if n.host else '') for n in nodes]
    groups = ['%s %s' % (group_name, n.group) for n in nodes]
    width = max([16] + [len(x) for x in labels + groups]) + 2
    rows = ['%s (%s %s)' % (n.name, group_name, n.group) for n in nodes]
    head = max(len(r) for r in rows + ['from \\ to']) + 2
    lines = [title, 'cell = ping/tcp measured (expected), rows reach columns; !! = not as expected', '']
    lines.append(('from \\ to'.ljust(head) + ''.join(x.ljust(width) for x in labels)).rstrip())
    lines.append((''.ljust(head) + ''.join(x.ljust(width) for x in groups)).rstrip())
    for src, label in zip(nodes, rows):
        row = label.ljust(head)
        for dst in nodes:
            cell = matrix.cells.get((src.name, dst.name))
            if src.name == dst.name:
                text = '-'
            elif cell is None:
                text = 'not measured'
            else:
                text = '%s/%s (%s)%s' % (_yn(cell.ping), _yn(cell.tcp), _yn(cell.expected),
                                         '' if cell.ok else ' !!')
            row += text.ljust(width)
        lines.append(row.rstrip())
    lines.append('')
    for check in matrix.ssh:
        problem = '' if check.ok else ' !! %s' % check.detail
        lines.append('SSH %s at %s: %s (expected yes)%s' % (check.host, check.address, _yn(check.ok), problem))
    good = sum(1 for c in matrix.cells.values() if c.ok)
    summary = '%d/%d cells as expected' % (good, len(matrix.cells))
    if matrix.ssh:
        summary += ', SSH %d/%d hosts' % (sum(1 for s in matrix.ssh if s.ok), len(matrix.ssh))
    lines.append('%s: %s' % ('PASS' if matrix.ok else 'FAIL', summary))
    return '\n'.join(lines)


def parse_node(text):
    parts = text.split(',')
    if len(parts) not in (3, 4) or not all(parts[:3]):
        raise argparse.ArgumentTypeError('%r: expected NAME,ADDRESS,GROUP[,HOST]' % text)
    return Node(*parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--node', action='append', type=parse_node, required=True,
                        help='NAME,ADDRESS,GROUP[,HOST]: a container, its address, its group (VLAN), its host')
    parser.add_argument('--lab', help='also check that every host of this lab answers SSH on its address')
    parser.add_argument('--title', default='Connectivity from inside the containers')
    parser.add_argument('--group-name', default='group', help='what a group is, for the display (e.g. VLAN)')
    parser.add_argument('--port', type=int, help='TCP port of the test servers (default: random)')
    parser.add_argument('--json', action='store_true', help='print the result as JSON')
    args = parser.parse_args(argv)
    matrix = measure(args.node, port=args.port)
    if args.lab:
        matrix.ssh = check_ssh(load_lab(args.lab))
    print(json.dumps(matrix.to_dict(), indent=2) if args.json else render(matrix, args.title, args.group_name))
    return 0 if matrix.ok else 1


if __name__ == '__main__':
    sys.exit(main())
