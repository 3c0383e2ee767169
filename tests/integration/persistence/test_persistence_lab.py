"""The persistence role and agent on a two-host lab: one agent per host, each acting only on its own records;
a host's OVS daemons killed and restarted while a container restarts; everything over real SSH.

The lab hosts share one dockerd and the root filesystem (/var/lib too); each has its own network, mount and
UTS namespaces and its own OVS. The role starts each host's agent detached inside that host's namespaces.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from nphelpers import REPO, VENV_BIN, ansible_env, can_tcp, run, suffix
from persistence_helpers import WAIT, container_pid, ns_ping, record_figure, started_at, wait_for

from ansible_collections.netplumb.pipework.plugins.module_utils.veth.store import Store


def _load_lab():
    spec = importlib.util.spec_from_file_location('netplumb_lab', os.path.join(REPO, 'lab', 'lab.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lab_mod = _load_lab()
TAG = suffix()
HOSTS = ['pa%sa' % TAG, 'pa%sb' % TAG]
BRIDGE = 'ovsnpl'


@pytest.fixture(scope='module')
def lab():
    instance = lab_mod.Lab('pers%s' % TAG, hosts=2, names=HOSTS)
    instance.up()
    yield instance
    instance.down()


@pytest.fixture(scope='module')
def places():
    """A record store and an install dir for the agent's code, both private to this module."""
    store = tempfile.mkdtemp(prefix='np-plstore-')
    install = tempfile.mkdtemp(prefix='np-plcode-')
    yield store, install
    run(['rm', '-rf', store, install], check=False)


def playbook(lab, play):
    """ansible-playbook over SSH against the lab; returns (rc, output, {host: recap})."""
    started = time.time()
    fd, path = tempfile.mkstemp(suffix='.yml', prefix='np-plplay-')
    with os.fdopen(fd, 'w') as f:
        json.dump(play, f)
    try:
        proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', str(lab.inventory_path), path],
                              capture_output=True, text=True, env=ansible_env(), cwd=REPO, check=False)
    finally:
        os.unlink(path)
    print('playbook %s took %.1f s' % (play[0]['hosts'], time.time() - started))
    recap = {}
    for line in proc.stdout.splitlines():
        if ' : ok=' in line:
            host, fields = line.split(':', 1)
            recap[host.strip()] = dict((k, int(v)) for k, v in (x.split('=') for x in fields.split()))
    return proc.returncode, proc.stdout + proc.stderr, recap


def role_play(store, install, state='present'):
    return [{'hosts': 'lab', 'gather_facts': True, 'roles': [{
        'role': 'netplumb.pipework.persistence',
        'vars': {'persistence_state': state, 'persistence_install_dir': install, 'persistence_state_dir': store,
                 'persistence_start_detached': True, 'persistence_log_level': 'debug'}}]}]


def agent_status(store, host):
    try:
        with open(os.path.join(store, 'agents', '%s.json' % host)) as f:
            return json.load(f)
    except (IOError, ValueError):
        return {}


def agent_log(store, host):
    try:
        with open(os.path.join(store, 'agents', '%s.log' % host)) as f:
            return f.read()
    except IOError:
        return ''


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open('/proc/%d/stat' % pid) as f:
        return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')


def host_links(lab, host):
    return [link['ifname'] for link in json.loads(lab.exec(host, ['ip', '-j', 'link', 'show']).stdout)]


def ovs_tags(lab, host):
    out = lab.exec(host, ['ovs-vsctl', '--format=json', '--columns=name,tag', 'list', 'Port']).stdout
    return dict((name, tag if isinstance(tag, int) else None) for name, tag in json.loads(out)['data'])


def ovs_errors(lab, host, names):
    out = lab.exec(host, ['ovs-vsctl', '--format=json', '--columns=name,ofport,error', 'list', 'Interface']).stdout
    rows = dict((r[0], r[1:]) for r in json.loads(out)['data'])
    return [n for n in names if n not in rows or rows[n][0] in (-1, ['set', []]) or rows[n][1] != ['set', []]]


def restart_ovs(lab, host):
    """Start ovsdb-server and ovs-vswitchd again inside the host (the lab's own commands; conf.db persists)."""
    logs = ['-vconsole:emer', '-vsyslog:off', '-vfile:info']
    lab.exec(host, ['ovsdb-server', '/etc/openvswitch/conf.db', '--remote=punix:/run/openvswitch/db.sock',
                    '--remote=db:Open_vSwitch,Open_vSwitch,manager_options', '--pidfile=/run/openvswitch/ovsdb-server.pid',
                    '--log-file=/var/log/openvswitch/ovsdb-server.log', '--detach', '--no-chdir'] + logs)
    lab.exec(host, ['ovs-vswitchd', 'unix:/run/openvswitch/db.sock', '--pidfile=/run/openvswitch/ovs-vswitchd.pid',
                    '--log-file=/var/log/openvswitch/ovs-vswitchd.log', '--detach', '--no-chdir'] + logs)


def matrix_ok(pids):
    """x1 <-> x2 (VLAN 100) reach each other; x3 (VLAN 200, same subnet) is reached by nobody."""
    x1, x2, x3 = pids
    return (ns_ping(x1, '10.90.0.2') and ns_ping(x2, '10.90.0.1') and not ns_ping(x1, '10.90.0.3')
            and not ns_ping(x3, '10.90.0.2'))


def test_role_agents_per_host_container_restart_and_ovs_restart(lab, places, containers):
    store, install = places
    h1, h2 = HOSTS
    rc, out, recap = playbook(lab, role_play(store, install))
    assert rc == 0, out
    assert recap[h1]['changed'] > 0 and recap[h2]['changed'] > 0, out
    for host in HOSTS:
        assert wait_for(lambda h=host: agent_status(store, h).get('connected'), timeout=WAIT) is not None, \
            agent_log(store, host)
    pids = dict((h, agent_status(store, h)['pid']) for h in HOSTS)
    rc, out, recap = playbook(lab, role_play(store, install))
    assert rc == 0 and recap[h1]['changed'] == 0 and recap[h2]['changed'] == 0, out
    assert dict((h, agent_status(store, h)['pid']) for h in HOSTS) == pids, 'the second run kept the agents'

    names = [containers.start('np%s-x%d' % (TAG, i)) for i in (1, 2, 3)]
    attach = [{'hosts': h1, 'gather_facts': False, 'environment': {'NETPLUMB_STATE_DIR': store}, 'tasks': [{
        'name': 'attach three containers to the OVS of %s' % h1,
        'netplumb.pipework.docker_veth': {'bridge': BRIDGE, 'datapath_type': 'netdev', 'attachments': [
            {'container': names[0], 'address': ['10.90.0.1/24'], 'vlan': 100},
            {'container': names[1], 'address': ['10.90.0.2/24'], 'vlan': 100},
            {'container': names[2], 'address': ['10.90.0.3/24'], 'vlan': 200}]}}]}]
    rc, out = playbook(lab, attach)[:2]
    assert rc == 0, out
    recs = Store(root=store, host=h1).records()
    assert len(recs) == 3 and Store(root=store, host=h2).records() == []
    ports = dict((r['target'], r['host_ifname']) for r in recs)
    assert matrix_ok([container_pid(n) for n in names])

    # 1. A container restarts: the agent of host1 re-applies, the agent of host2 (same dockerd) does nothing.
    run(['docker', 'restart', '-t', '0', names[0]])
    t0 = started_at(names[0])
    assert wait_for(lambda: ns_ping(container_pid(names[0]), '10.90.0.2'), timeout=WAIT) is not None, \
        agent_log(store, h1)
    back = time.time() - t0
    assert can_tcp(names[1], names[0], '10.90.0.1')
    assert ports[names[0]] in host_links(lab, h1) and ports[names[0]] not in host_links(lab, h2)
    assert agent_status(store, h1)['applied'] >= 1
    assert agent_status(store, h2)['applied'] == 0 and agent_status(store, h2)['events'] >= 1, agent_log(store, h2)
    assert 'attachment(s) of' not in agent_log(store, h2)

    # 2. Both OVS daemons of host1 killed; x2 restarts while OVS is down; OVS started again.
    run_dir = os.path.join(str(lab.state_dir), 'hosts', h1, 'run')
    for daemon in ('ovs-vswitchd', 'ovsdb-server'):
        with open(os.path.join(run_dir, '%s.pid' % daemon)) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda p=pid: not alive(p), timeout=WAIT) is not None
    run(['docker', 'restart', '-t', '0', names[1]])
    assert wait_for(lambda: 'retrying in' in agent_log(store, h1).split('%s started' % names[1])[-1],
                    timeout=WAIT) is not None, agent_log(store, h1)
    t_ovs = time.time()
    restart_ovs(lab, h1)

    def matrix_now():
        return matrix_ok([container_pid(n) for n in names])
    assert wait_for(matrix_now, timeout=WAIT, interval=0.1) is not None, agent_log(store, h1)
    matrix_back = time.time() - t_ovs
    tags = ovs_tags(lab, h1)
    assert [tags.get(ports[n]) for n in names] == [100, 100, 200], tags
    assert ovs_errors(lab, h1, list(ports.values())) == []
    assert can_tcp(names[0], names[1], '10.90.0.2')
    assert 'attachment(s) of' not in agent_log(store, h2)
    record_figure('lab_container_restart', ping_back_s=back)
    record_figure('lab_ovs_killed_restarted', matrix_back_after_ovs_start_s=matrix_back,
                  restarted_container_reattached=True)

    # 3. Removal cleans host1's OVS; the role's absent stops both agents.
    run(['docker', 'rm', '-f', names[2]])
    assert wait_for(lambda: ports[names[2]] not in ovs_tags(lab, h1), timeout=WAIT) is not None, agent_log(store, h1)
    rc, out = playbook(lab, role_play(store, install, state='absent'))[:2]
    assert rc == 0, out
    for pid in pids.values():
        assert wait_for(lambda p=pid: not alive(p), timeout=WAIT) is not None
    assert not os.path.exists(os.path.join(install, 'ansible_collections'))
