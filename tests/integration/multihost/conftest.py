"""Fixtures for the multi-host role tests: a real SSH lab (lab/lab.py) per test, containers, playbook runs.

Every test gets its own lab (unique name) and its own containers; the finalizer takes the lab down, removes
the containers and the host_bridge_migrate records of the lab's namespaces (the lab hosts share the root
/run, so the records would outlive the lab). Nothing touches the root namespace's network.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / 'scripts'))

import connectivity_matrix as cm  # noqa: E402  pylint: disable=wrong-import-position

labmod = cm.lab_module()
VENV_BIN = Path(os.environ.get('NP_VENV', REPO / '.build' / 'venv')) / 'bin'
IMAGE = os.environ.get('NP_TEST_IMAGE', 'netplumb/busybox:test')
RECORDS = '/run/netplumb-pipework/bridge_migrate'
COLLECTIONS = REPO / '.build' / 'collections'

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='the lab needs root (namespaces, mounts)')


class PlaybookRun:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.recap = {}
        for line in proc.stdout.splitlines():
            if ' : ok=' in line:
                host, fields = line.split(':', 1)
                self.recap[host.strip()] = {k: int(v) for k, v in (f.split('=', 1) for f in fields.split())}

    def changed(self, host):
        return self.recap[host]['changed']

    def failed(self, host):
        return self.recap[host]['failed'] + self.recap[host]['unreachable']


class LabEnv:
    """One lab of the lab tool plus this test's containers and helpers to drive and inspect it."""

    def __init__(self, lab):
        self.lab = lab
        self.name = lab.config.name
        self.containers = []

    # ---- containers ----
    def start(self, suffix):
        name = '%s-%s' % (self.name, suffix)
        subprocess.run(['docker', 'run', '-d', '--net=none', '--init', '--label', 'netplumb.pipework.test=' + self.name,
                        '--name', name, IMAGE, 'sleep', '1000000'], check=True, capture_output=True)
        self.containers.append(name)
        return name

    def container_links(self, name):
        proc = subprocess.run(['docker', 'exec', name, 'ls', '/sys/class/net'], capture_output=True, text=True,
                              check=True)
        return sorted(proc.stdout.split())

    def container(self, name, *argv, timeout=30):
        return subprocess.run(['docker', 'exec', name] + list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False)

    # ---- inventory variables (next to the lab's inventory, so ansible-playbook -i <it> reads them) ----
    def write_vars(self, group_vars=None, host_vars=None):
        state = Path(self.lab.state_dir)
        for kind, data in (('group_vars', group_vars or {}), ('host_vars', host_vars or {})):
            for target, values in data.items():
                path = state / kind / ('%s.yml' % target)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(values, indent=2) + '\n')  # JSON is YAML

    # ---- running playbooks, in the three ways the issue names ----
    def playbook(self, name, how='repo', extra_vars=None, check=False, timeout=900):
        """Run playbook ``name`` against the lab.

        how: 'repo' - ``ansible-playbook playbooks/NAME.yml`` from the repository root (its ansible.cfg);
        'playbooks' - ``ansible-playbook NAME.yml`` from playbooks/ with no collections path in the
        environment (playbooks/ansible.cfg finds the collection); 'fqcn' - ``ansible-playbook
        netplumb.pipework.NAME`` from an unrelated directory, the collection on ANSIBLE_COLLECTIONS_PATH as
        an installed one would be; or a path to a playbook of the user's own (run from its directory).
        """
        env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_DEPRECATION_WARNINGS='False',
                   ANSIBLE_RETRY_FILES_ENABLED='False')
        env.pop('ANSIBLE_CONFIG', None)
        inventory = str(self.lab.inventory_path)
        if how == 'repo':
            cwd, target = REPO, 'playbooks/%s.yml' % name
            env.pop('ANSIBLE_COLLECTIONS_PATH', None)
        elif how == 'playbooks':
            cwd, target = REPO / 'playbooks', '%s.yml' % name
            env.pop('ANSIBLE_COLLECTIONS_PATH', None)
        elif how == 'fqcn':
            cwd, target = Path(tempfile.gettempdir()), 'netplumb.pipework.%s' % name
            env['ANSIBLE_COLLECTIONS_PATH'] = str(COLLECTIONS)
        else:
            cwd, target = Path(how).parent, str(how)
            env['ANSIBLE_COLLECTIONS_PATH'] = str(COLLECTIONS)
        argv = [str(VENV_BIN / 'ansible-playbook'), '-i', inventory, target]
        for key, value in (extra_vars or {}).items():
            argv += ['-e', json.dumps({key: value})]
        if check:
            argv.append('--check')
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=str(cwd), env=env, timeout=timeout,
                              check=False)
        return PlaybookRun(proc)

    # ---- inspecting a host ----
    def ipj(self, host, *args):
        proc = self.lab.exec(host, ['ip', '-j'] + list(args), check=False)
        return json.loads(proc.stdout or '[]') if proc.returncode == 0 else []

    def network(self, host, uplink):
        """What state=absent must give back: the uplink's MAC, MTU, master and global addresses, and every
        IPv4 route of the host (all tables) with the attributes the migration carries over."""
        link = (self.ipj(host, '-d', 'link', 'show', 'dev', uplink) or [{}])[0]
        addrs = (self.ipj(host, 'addr', 'show', 'dev', uplink) or [{}])[0].get('addr_info', [])
        keys = ('type', 'dst', 'gateway', 'dev', 'table', 'metric', 'prefsrc', 'scope', 'protocol')
        routes = [' '.join('%s=%s' % (k, r[k]) for k in keys if k in r)
                  for r in self.ipj(host, '-4', 'route', 'show', 'table', 'all')]
        return {'mac': link.get('address'), 'mtu': link.get('mtu'), 'master': link.get('master'),
                'addresses': sorted('%s/%s' % (a['local'], a['prefixlen']) for a in addrs
                                    if a.get('scope') == 'global'),
                'routes': sorted(routes)}

    def global_addresses(self, host, dev):
        addrs = (self.ipj(host, 'addr', 'show', 'dev', dev) or [{}])[0].get('addr_info', [])
        return sorted('%s/%s' % (a['local'], a['prefixlen']) for a in addrs if a.get('scope') == 'global')

    def ovs(self, host, *argv):
        return self.lab.exec(host, ['ovs-vsctl'] + list(argv)).stdout.split()

    def ssh_ok(self):
        checks = cm.check_ssh(self.lab)
        return all(c.ok for c in checks), checks

    # ---- tear-down ----
    def records(self):
        try:
            state = json.loads((Path(self.lab.state_dir) / 'state.json').read_text())
        except (OSError, ValueError):
            return []
        paths = []
        for inode in state.get('namespaces', {}).values():
            if inode:
                paths += glob.glob(os.path.join(RECORDS, 'netns-%d.*' % inode))
        return paths

    def cleanup(self):
        records = self.records()
        try:
            self.lab.down()
        finally:
            for path in records:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            if self.containers:
                subprocess.run(['docker', 'rm', '-f'] + self.containers, capture_output=True, check=False)


@pytest.fixture
def make_lab():
    """make_lab(**LabConfig options) -> LabEnv with the lab up; everything is removed after the test."""
    envs = []

    def make(**options):
        name = 'mh%s%s' % (os.getpid() % 10000, secrets.token_hex(2))
        lab = labmod.Lab(name, config=labmod.LabConfig(name=name, **options))
        env = LabEnv(lab)
        envs.append(env)
        lab.up()
        return env

    yield make
    for env in envs:
        env.cleanup()
