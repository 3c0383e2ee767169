"""Shared fixtures for integration tests: real dockerd, real OVS (throwaway netdev bridges), real kernel.

Everything a test creates is named with a per-test random suffix and removed by the fixture's finalizer.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(os.environ.get('NP_VENV', os.path.join(REPO, '.build', 'venv')), 'bin')
IMAGE = os.environ.get('NP_TEST_IMAGE', 'netplumb/busybox:test')
# Modules run with Debian's python3 and its python3-pyroute2 (0.7) / python3-docker, as on a target host.
TARGET_PYTHON = os.environ.get('NP_TARGET_PYTHON', '/usr/bin/python3')


def run(argv, check=True, **kwargs):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


# docker_veth records attachments for the persistence agent; tests keep theirs out of the host's
# /var/lib/netplumb-pipework (a test that needs a store of its own sets NETPLUMB_STATE_DIR itself).
TEST_STATE_DIR = tempfile.mkdtemp(prefix='np-test-records-')


def ansible_env():
    env = dict(os.environ)
    env.setdefault('NETPLUMB_STATE_DIR', TEST_STATE_DIR)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(REPO, '.build', 'collections'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_HOST_KEY_CHECKING': 'False',
        'ANSIBLE_PYTHON_INTERPRETER': TARGET_PYTHON,
        'ANSIBLE_LOCALHOST_WARNING': 'False',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False',
        'ANSIBLE_DEPRECATION_WARNINGS': 'False',
    })
    return env


def run_module(module, args, check=False, diff=False, netns=None, nofile=None):
    """Run one module with `ansible -m` (the real module path through Ansible); return (failed, result).

    ``nofile``: the soft limit of open files to run it under (the common default of 1024, say).
    """
    argv = [os.path.join(VENV_BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
            '-m', module, '-a', json.dumps(args), '-o']
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    if nofile:
        argv = ['prlimit', '--nofile=%d:' % nofile, '--'] + argv
    if netns:
        argv = ['ip', 'netns', 'exec', netns] + argv
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), cwd=REPO, check=False)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''
    if '=>' not in line:
        raise AssertionError('no module result:\nstdout=%s\nstderr=%s' % (proc.stdout, proc.stderr))
    status, dummy, payload = line.partition('=>')
    result = json.loads(payload)
    # Ansible prints --diff output before the one-line result and strips it from the JSON.
    result['_stdout'] = proc.stdout
    return ('FAILED' in status or 'UNREACHABLE' in status), result


def run_playbook(playbook, extra_vars=None, check=False, inventory='localhost,', netns=None):
    """Run ansible-playbook; return (rc, stdout, recap dict of the first host)."""
    argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory, '-c', 'local', playbook]
    fd, path = tempfile.mkstemp(suffix='.json')
    with os.fdopen(fd, 'w') as f:
        json.dump(extra_vars or {}, f)
    argv += ['-e', '@' + path]
    if check:
        argv.append('--check')
    if netns:
        argv = ['ip', 'netns', 'exec', netns] + argv
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), cwd=REPO, check=False)
    finally:
        os.unlink(path)
    recap = {}
    for line in proc.stdout.splitlines():
        if ' : ok=' in line:
            for field in line.split(':', 1)[1].split():
                key, dummy, value = field.partition('=')
                recap[key] = int(value)
    return proc.returncode, proc.stdout + proc.stderr, recap


def suffix():
    return secrets.token_hex(3)


class Containers:
    def __init__(self):
        self.names = []

    def start(self, name):
        run(['docker', 'run', '-d', '--name', name, '--net=none', '--init', IMAGE, 'sleep', '1000000'])
        self.names.append(name)
        return name

    def remove(self, name):
        run(['docker', 'rm', '-f', name], check=False)

    def cleanup(self):
        # One `docker rm` for all of them: a call per container costs more than the test itself at scale.
        for start in range(0, len(self.names), 50):
            run(['docker', 'rm', '-f'] + self.names[start:start + 50], check=False)


@pytest.fixture
def containers():
    c = Containers()
    yield c
    c.cleanup()


@pytest.fixture
def ovs_bridge():
    """A throwaway bridge name in the root OVS (netdev datapath); deleted afterwards."""
    name = 'ovsnp' + suffix()
    yield name
    run(['ovs-vsctl', '--if-exists', 'del-br', name], check=False)


def docker_exec(name, *argv, check=False, timeout=20):
    return subprocess.run(['docker', 'exec', name] + list(argv), capture_output=True, text=True,
                          check=check, timeout=timeout)


def can_ping(src, dst_ip):
    return docker_exec(src, 'ping', '-c', '1', '-W', '1', dst_ip).returncode == 0


def can_tcp(src, dst, dst_ip, port=None):
    """A TCP exchange: dst listens with busybox nc, src connects and must read dst's greeting."""
    port = port or 20000 + secrets.randbelow(10000)
    token = 'np-%s' % suffix()
    # busybox's timeout ends the listener if nobody connects; no process is left behind.
    server = subprocess.Popen(['docker', 'exec', dst, 'sh', '-c', 'echo %s | timeout 6 nc -l -p %d' % (token, port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for attempt in range(30):  # pylint: disable=unused-variable
            if docker_exec(dst, 'sh', '-c', 'netstat -ltn | grep -q ":%d "' % port).returncode == 0:
                break
            subprocess.run(['sleep', '0.1'], check=True)
        got = docker_exec(src, 'sh', '-c', 'nc -w 2 %s %d </dev/null' % (dst_ip, port))
        return token in got.stdout
    finally:
        server.wait(timeout=15)


def host_links():
    out = run(['ip', '-j', 'link', 'show']).stdout
    return sorted(link['ifname'] for link in json.loads(out))


def ovs_dump():
    """The OVS database's Bridge/Port/Interface rows that matter, for before/after comparisons."""
    out = run(['ovs-vsctl', '--format=json', '--', '--columns=name,ports', 'list', 'Bridge',
               '--', '--columns=name,tag,trunks,external_ids', 'list', 'Port',
               '--', '--columns=name,external_ids', 'list', 'Interface']).stdout
    return sorted(out.splitlines())


def container_ids(names):
    return [run(['docker', 'inspect', '-f', '{{.Id}}', n]).stdout.strip() for n in names]


def scoped_state(bridge, containers_names, ifnames=('eth1',)):
    """What one test may change: its bridge's ports and tags, the host links its attachments would get,
    and the test containers' links. Scoped, so tests running beside it cannot make it fail."""
    from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import derive_host_ifname
    ours = set([bridge])
    for cid in container_ids(containers_names):
        ours.update(derive_host_ifname(cid, ifname) for ifname in ifnames)
    links = sorted(name for name in host_links() if name in ours)
    ports = run(['ovs-vsctl', '--format=json', '--columns=name,tag,trunks', 'list', 'Port'], check=False).stdout
    bridge_ports = run(['ovs-vsctl', 'list-ports', bridge], check=False)
    port_names = set(bridge_ports.stdout.split()) if bridge_ports.returncode == 0 else None
    port_rows = sorted(json.dumps(row) for row in json.loads(ports)['data']
                       if port_names is not None and row[0] in port_names)
    inside = dict((n, docker_exec(n, 'ip', '-o', 'link').stdout) for n in containers_names)
    return links, port_names is not None, port_rows, inside


def run_task(module, args, check=False, diff=False, netns=None):
    """Run one module as a playbook task and return its registered result, `diff` included."""
    workdir = tempfile.mkdtemp(prefix='np-task-')
    out_path = os.path.join(workdir, 'result.json')
    play = [{
        'hosts': 'localhost', 'gather_facts': False,
        'tasks': [
            {'name': 'under test', module: args, 'register': 'r', 'ignore_errors': True},
            {'name': 'save', 'ansible.builtin.copy': {'content': '{{ r | to_json }}', 'dest': out_path},
             'check_mode': False},
        ],
    }]
    path = os.path.join(workdir, 'play.yml')
    with open(path, 'w') as f:
        json.dump(play, f)
    argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', path]
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    if netns:
        argv = ['ip', 'netns', 'exec', netns] + argv
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
    return bool(result.get('failed')), result
