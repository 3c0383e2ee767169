"""Lockout protection end to end, over real SSH to a lab host (lab/lab.py: a namespace host with its own
sshd, reached through the lab switch): a migration whose probe cannot succeed reverts by itself and the
play fails with the reason; a migration that cuts the management path and is never confirmed reverts after
rollback_timeout while the SSH session hangs. In both cases the host answers SSH afterwards on its
original addressing, and a confirmation after the revert fails.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import secrets
import subprocess
import sys

import pytest

from bm_lab import MODULE, REPO, STATE_DIR, VENV_BIN, ansible_env

LAB_PY = os.path.join(REPO, 'lab', 'lab.py')

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason='needs root (network namespaces)'),
    pytest.mark.skipif(not os.path.exists(LAB_PY), reason='lab/lab.py is not there'),
]


def _lab_module():
    spec = importlib.util.spec_from_file_location('netplumb_lab_bm', LAB_PY)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def lab():
    mod = _lab_module()
    instance = mod.Lab('bm%s' % secrets.token_hex(2), hosts=1)
    instance.up()
    inodes = [os.stat('/run/netns/%s' % h.netns).st_ino for h in instance.hosts]
    try:
        yield instance
    finally:
        instance.down()  # also ends every process left in the host's namespace (an armed revert)
        for inode in inodes:
            for path in glob.glob(os.path.join(STATE_DIR, 'netns-%d.*' % inode)):
                os.unlink(path)


def host_state(lab):
    """Addresses and routes of the host's uplink, read over SSH (so SSH must answer)."""
    out = {}
    for key, argv in (('addr', ['ip', '-j', 'addr', 'show', 'dev', 'eth0', 'scope', 'global']),
                      ('route', ['ip', '-j', 'route', 'show', 'dev', 'eth0']),
                      ('link', ['ip', '-j', 'link', 'show', 'dev', 'eth0'])):
        proc = subprocess.run(lab.ssh_argv('host1', argv), capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, 'the host does not answer SSH: %s' % proc.stderr
        data = json.loads(proc.stdout)
        if key == 'addr':
            out[key] = sorted('%s/%s' % (a['local'], a['prefixlen']) for a in data[0]['addr_info'] if 'local' in a)
        elif key == 'route':
            out[key] = sorted(json.dumps(r, sort_keys=True) for r in data)
        else:
            out[key] = (data[0].get('master'), data[0]['mtu'], data[0]['address'])
    return out


def play(lab, tasks, timeout=600):
    """Run tasks on host1 over SSH; return (rc, output, registered results)."""
    workdir = lab.state_dir
    out_path = os.path.join(str(workdir), 'bm-results-%s.json' % secrets.token_hex(3))
    names = [t['register'] for t in tasks if 'register' in t]
    save = {'name': 'save results', 'delegate_to': 'localhost', 'ansible.builtin.copy': {
        'content': '{{ {%s} | to_json }}' % ', '.join("'%s': (%s | default(None))" % (n, n) for n in names),
        'dest': out_path}}
    playbook = [{'hosts': 'host1', 'gather_facts': False, 'tasks': [{'block': tasks, 'always': [save]}]}]
    path = os.path.join(str(workdir), 'bm-play-%s.yml' % secrets.token_hex(3))
    with open(path, 'w') as f:
        json.dump(playbook, f)
    argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', str(lab.inventory_path), path]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), cwd=REPO, timeout=timeout,
                          check=False)
    try:
        with open(out_path) as f:
            results = json.load(f)
    except (IOError, ValueError):
        raise AssertionError('no results:\n%s\n%s' % (proc.stdout, proc.stderr))
    finally:
        for p in (path, out_path):
            if os.path.exists(p):
                os.unlink(p)
    return proc.returncode, proc.stdout + proc.stderr, results


def confirm_tasks(bridge):
    return [{'name': 'reconnect', 'ansible.builtin.meta': 'reset_connection'},
            {'name': 'wait for the host', 'ansible.builtin.wait_for_connection': {'timeout': 60}},
            {'name': 'confirm', MODULE: {'uplink': 'eth0', 'bridge': bridge, 'confirm': True},
             'register': 'confirmed', 'ignore_errors': True}]


def test_probe_failure_over_ssh_reverts_and_fails(lab):
    before = host_state(lab)
    task = {'name': 'migrate', MODULE: {'uplink': 'eth0', 'bridge': 'br0', 'probe': '10.10.101.77',
                                        'probe_timeout': 3}, 'register': 'm', 'ignore_errors': True}
    rc, out, res = play(lab, [task] + confirm_tasks('br0'))
    m = res['m']
    assert m['failed'] and 'probe failed' in m['msg'] and '10.10.101.77' in m['msg'] and 'reverted' in m['msg'], out
    assert res['confirmed']['failed'] and 'too late' in res['confirmed']['msg'], out
    assert host_state(lab) == before


def test_cut_management_path_reverts_after_timeout(lab):
    """The host's firewall drops everything through br0 (iptables in the host's namespace): once eth0 is
    br0's port, the host's traffic is dropped and the SSH session hangs. Nobody can confirm; the revert
    fires after rollback_timeout, the session recovers, and the confirmation over a new connection fails
    loudly."""
    for argv in (['iptables', '-A', 'INPUT', '-i', 'br0', '-j', 'DROP'],
                 ['iptables', '-A', 'OUTPUT', '-o', 'br0', '-j', 'DROP']):
        lab.exec('host1', argv, check=True)
    before = host_state(lab)
    task = {'name': 'migrate', MODULE: {'uplink': 'eth0', 'bridge': 'br0', 'probe': '', 'rollback_timeout': 15},
            'register': 'm', 'ignore_errors': True, 'ignore_unreachable': True}
    rc, out, res = play(lab, [task] + confirm_tasks('br0'))
    m, confirmed = res['m'], res['confirmed']
    # The module's answer reaches the controller once the revert restored the path (TCP retransmits),
    # unless SSH gave up first: either way the change was made and armed, never confirmed.
    assert m and (m.get('unreachable') or m['rollback']['status'] == 'armed'), out
    print('migrate task result: %s' % ('unreachable' if m.get('unreachable') else m['rollback']))
    assert confirmed and confirmed.get('failed'), out
    assert 'too late' in confirmed['msg'] and 'not confirmed within 15 s' in confirmed['msg'], confirmed['msg']
    assert host_state(lab) == before
