"""Persistence and faults: the agent brings attachments back without Ansible (real dockerd, OVS, kernel).

Every test has its own record store and agent; recovery is waited for with a generous bound and the time it
took is printed and written to bench/results/reliability.json (never asserted).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import pytest

from nphelpers import IMAGE, REPO, VENV_BIN, ansible_env, can_tcp, run, run_module, suffix
from persistence_helpers import (WAIT, AgentProcess, PrivateDockerd, container_pid, ns_ping, ns_summary,
                                 record_figure, started_at, wait_for)

from ansible_collections.netplumb.pipework.plugins.module_utils.veth.store import Store

MODULE = 'netplumb.pipework.docker_veth'


@pytest.fixture
def store(monkeypatch):
    """A private record store; module runs (ansible -c local) inherit NETPLUMB_STATE_DIR."""
    path = tempfile.mkdtemp(prefix='np-pstore-')
    monkeypatch.setenv('NETPLUMB_STATE_DIR', path)
    yield path
    run(['rm', '-rf', path], check=False)


@pytest.fixture
def agent(store):
    proc = AgentProcess(store)
    yield proc
    proc.stop()


class Host:
    """Where the host ends live: the root namespace (root OVS, ovsnp* bridge), or for Linux bridges a throwaway
    namespace (the root namespace's FORWARD policy is Docker's DROP and br_netfilter is on)."""

    def __init__(self, kind, ovs_bridge):
        self.kind = kind
        self.ns = None
        self.bridge = ovs_bridge
        if kind == 'linux':
            self.ns = 'np-phost-%s' % suffix()
            self.bridge = 'brnp' + suffix()
            run(['ip', 'netns', 'add', self.ns])

    @property
    def prefix(self):
        return ['ip', 'netns', 'exec', self.ns] if self.ns else []

    def links(self):
        return sorted(link['ifname'] for link in json.loads(run(self.prefix + ['ip', '-j', 'link', 'show']).stdout))

    def attach(self, args):
        failed, res = run_module(MODULE, args, netns=self.ns)
        assert not failed, res
        return res

    def agent(self, store, args=()):
        return AgentProcess(store, args=args, prefix=self.prefix)

    def cleanup(self):
        if self.ns:
            run(['ip', 'netns', 'del', self.ns], check=False)


@pytest.fixture(params=['ovs', 'linux'])
def host(request, ovs_bridge):
    h = Host(request.param, ovs_bridge)
    yield h
    h.cleanup()


def ovs_row(table, name, columns):
    out = run(['ovs-vsctl', '--format=json', '--columns=%s' % columns, 'find', table, 'name=%s' % name]).stdout
    rows = json.loads(out)['data']
    return dict(zip(columns.split(','), rows[0])) if rows else None


def attach(args):
    failed, res = run_module(MODULE, args)
    assert not failed, res
    return res


def records(path):
    return Store(root=path, host=run(['hostname']).stdout.strip()).records()


def pair_args(bridge, kind, a, b):
    common = {'bridge': bridge, 'mtu': 1400}
    if kind == 'ovs':
        common.update(datapath_type='netdev', vlan=42)
    else:
        common.update(bridge_type='linux')
    return dict(common, attachments=[
        {'container': a, 'address': ['10.81.0.1/24'], 'gateway': '10.81.0.254',
         'routes': [{'dest': '10.82.0.0/16', 'via': '10.81.0.253'}]},
        {'container': b, 'address': ['10.81.0.2/24']},
    ])


def test_container_restart_brings_the_attachment_back(host, containers, store):
    """docker restart: veth, addresses, routes, MAC, MTU, VLAN come back, ping and TCP work, without Ansible."""
    kind = host.kind
    tag = suffix()
    a, b = containers.start('np%s-pa' % tag), containers.start('np%s-pb' % tag)
    res = host.attach(pair_args(host.bridge, kind, a, b))
    host_ifname = res['attachments'][0]['host_ifname']
    recs = records(store)
    assert len(recs) == 2 and all(r['bridge_type'] == kind for r in recs), recs
    for r in recs:
        assert oct(os.stat(r['_path']).st_mode & 0o777) == '0o600'
    assert oct(os.stat(os.path.dirname(recs[0]['_path'])).st_mode & 0o777) == '0o700'
    if kind == 'ovs':
        ids = ovs_row('Interface', host_ifname, 'external_ids')['external_ids'][1]
        config = json.loads(dict(ids)['netplumb_config'])
        assert config['vlan'] == 42 and config['addresses'] == ['10.81.0.1/24'] and config['gateway'] == '10.81.0.254'
    before = ns_summary(container_pid(a), 'eth1')
    assert before['mtu'] == 1400 and before['routes'] == ['10.82.0.0/16 via 10.81.0.253', 'default via 10.81.0.254']

    agent = host.agent(store).start()
    try:
        run(['docker', 'restart', '-t', '0', a])
        _restart_checks(host, store, agent, a, b, host_ifname, before)
    finally:
        agent.stop()


def _restart_checks(host, store, agent, a, b, host_ifname, before):
    kind = host.kind
    t0 = started_at(a)
    pid = container_pid(a)
    back = wait_for(lambda: ns_summary(pid, 'eth1') == before, timeout=WAIT)
    assert back is not None, 'attachment not back: %s\n%s' % (ns_summary(pid, 'eth1'), agent.log())
    back = time.time() - t0
    assert wait_for(lambda: ns_ping(pid, '10.81.0.2'), timeout=WAIT) is not None, agent.log()
    ping_back = time.time() - t0
    assert can_tcp(b, a, '10.81.0.1') and can_tcp(a, b, '10.81.0.2'), agent.log()
    tcp_back = time.time() - t0
    if kind == 'ovs':
        port = ovs_row('Port', host_ifname, 'tag')
        assert port['tag'] == 42
        assert len([i for i in host.links() if i == host_ifname]) == 1
    assert len(records(store)) == 2
    status = agent.status()
    record_figure('container_restart_%s' % kind, attachment_back_s=back, ping_back_s=ping_back, tcp_back_s=tcp_back,
                  agent_apply_s=status.get('last_apply_seconds'), agent_lock_wait_s=status.get('last_lock_wait'))


def test_container_removal_removes_port_veth_and_record(host, containers, store):
    kind = host.kind
    tag = suffix()
    a, b = containers.start('np%s-ra' % tag), containers.start('np%s-rb' % tag)
    res = host.attach(pair_args(host.bridge, kind, a, b))
    gone_if, kept_if = res['attachments'][0]['host_ifname'], res['attachments'][1]['host_ifname']
    agent = host.agent(store).start()
    try:
        run(['docker', 'rm', '-f', a])
        t0 = time.time()

        def cleaned():
            return (gone_if not in host.links() and len(records(store)) == 1
                    and (kind != 'ovs' or ovs_row('Interface', gone_if, 'name') is None))
        took = wait_for(cleaned, timeout=WAIT)
        assert took is not None, agent.log()
        took = time.time() - t0
    finally:
        agent.stop()
    assert kept_if in host.links(), 'the other container keeps its attachment'
    if kind == 'ovs':
        assert ovs_row('Interface', kept_if, 'name') is not None
    record_figure('container_removal_%s' % kind, cleanup_s=took)


def test_agent_restart_reconciles(containers, ovs_bridge, store, agent):
    """While the agent is down a container restarts and another is removed; the new agent fixes both."""
    tag = suffix()
    a, b, c = (containers.start('np%s-g%s' % (tag, x)) for x in 'abc')
    attach({'bridge': ovs_bridge, 'datapath_type': 'netdev', 'vlan': 7, 'attachments': [
        {'container': a, 'address': ['10.83.0.1/24']}, {'container': b, 'address': ['10.83.0.2/24']},
        {'container': c, 'address': ['10.83.0.3/24']}]})
    c_if = [r['host_ifname'] for r in records(store) if r['target'] == c][0]
    agent.start()
    agent.stop()
    run(['docker', 'restart', '-t', '0', a])
    run(['docker', 'rm', '-f', c])
    pid = container_pid(a)
    assert ns_summary(pid, 'eth1') is None, 'nothing re-applies while the agent is down'
    t0 = time.time()
    agent.start(wait=False)
    assert wait_for(lambda: ns_ping(pid, '10.83.0.2'), timeout=WAIT) is not None, agent.log()
    back = time.time() - t0
    assert wait_for(lambda: ovs_row('Interface', c_if, 'name') is None and len(records(store)) == 2,
                    timeout=WAIT) is not None, agent.log()
    cleaned = time.time() - t0
    assert can_tcp(b, a, '10.83.0.1'), agent.log()
    assert ovs_row('Port', [r['host_ifname'] for r in records(store) if r['target'] == a][0], 'tag')['tag'] == 7
    record_figure('agent_restart', reapplied_after_agent_start_s=back, removed_cleaned_after_agent_start_s=cleaned)


def test_keep_removed_reattaches_a_container_recreated_under_its_name(containers, ovs_bridge, store):
    """--keep-removed: removing the container removes its port but keeps the record; a new container of the
    same name gets the attachment back when it starts (compose-style recreation)."""
    tag = suffix()
    a, b = containers.start('np%s-ka' % tag), containers.start('np%s-kb' % tag)
    attach({'bridge': ovs_bridge, 'datapath_type': 'netdev', 'vlan': 11, 'attachments': [
        {'container': a, 'address': ['10.86.0.1/24']}, {'container': b, 'address': ['10.86.0.2/24']}]})
    old_if = [r['host_ifname'] for r in records(store) if r['target'] == a][0]
    agent = AgentProcess(store, args=['--keep-removed']).start()
    try:
        run(['docker', 'rm', '-f', a])
        assert wait_for(lambda: ovs_row('Interface', old_if, 'name') is None, timeout=WAIT) is not None, agent.log()
        assert len(records(store)) == 2, 'the record is kept'
        containers.start(a)
        t0 = started_at(a)
        assert wait_for(lambda: ns_ping(container_pid(a), '10.86.0.2'), timeout=WAIT) is not None, agent.log()
        back = time.time() - t0
    finally:
        agent.stop()
    recs = dict((r['target'], r) for r in records(store))
    assert len(recs) == 2 and recs[a]['host_ifname'] != old_if and recs[a]['vlan'] == 11
    assert recs[a]['container_id'] == run(['docker', 'inspect', '-f', '{{.Id}}', a]).stdout.strip()
    record_figure('keep_removed_recreated', ping_back_s=back)


def test_private_dockerd_restart(ovs_bridge, store):
    """A dockerd of our own is stopped (its containers stop) and started again; attachments come back once the
    containers run again: one by its restart policy, one started by hand."""
    dockerd = PrivateDockerd(suffix())
    agent = None
    try:
        dockerd.start()
        dockerd.load_image(IMAGE)
        docker = list(dockerd.docker)
        tag = suffix()
        auto, manual, peer = ('np%s-d%s' % (tag, x) for x in ('auto', 'man', 'peer'))
        for name, policy in ((auto, 'always'), (manual, 'no'), (peer, 'always')):
            run(docker + ['run', '-d', '--name', name, '--net=none', '--init', '--restart', policy, IMAGE,
                          'sleep', '1000000'])
        attach({'bridge': ovs_bridge, 'datapath_type': 'netdev', 'vlan': 9, 'docker_host': dockerd.url,
                'attachments': [{'container': auto, 'address': ['10.84.0.1/24']},
                                {'container': manual, 'address': ['10.84.0.2/24']},
                                {'container': peer, 'address': ['10.84.0.3/24']}]})
        assert all(r['docker_host'] == dockerd.url for r in records(store))
        agent = AgentProcess(store, args=['--docker-host', dockerd.url]).start()
        assert ns_ping(container_pid(peer, docker), '10.84.0.1')

        dockerd.stop()
        assert wait_for(lambda: not agent.status().get('connected'), timeout=WAIT) is not None
        t_restart = time.time()
        dockerd.start()
        t_up = time.time()

        def peer_pid():
            return container_pid(peer, docker)
        assert wait_for(lambda: run(docker + ['inspect', '-f', '{{.State.Running}}', auto]).stdout.strip() == 'true',
                        timeout=WAIT) is not None
        assert wait_for(lambda: ns_ping(peer_pid(), '10.84.0.1'), timeout=WAIT) is not None, agent.log()
        auto_back = time.time() - t_up
        run(docker + ['start', manual])
        t_manual = started_at(manual, docker)
        assert wait_for(lambda: ns_ping(peer_pid(), '10.84.0.2'), timeout=WAIT) is not None, agent.log()
        manual_back = time.time() - t_manual
        assert agent.status().get('connected')
        assert len(records(store)) == 3
        record_figure('dockerd_restart', dockerd_start_s=t_up - t_restart, restart_policy_container_back_after_api_up_s=auto_back,
                      manually_started_container_back_s=manual_back)
    finally:
        if agent is not None:
            agent.stop()
        dockerd.destroy()


def test_two_playbook_runs_at_once(containers, ovs_bridge, store):
    """Two ansible-playbook runs against this host at once, one container each on one new bridge."""
    tag = suffix()
    names = [containers.start('np%s-c%d' % (tag, i)) for i in (1, 2)]
    workdir = tempfile.mkdtemp(prefix='np-pb2-')
    procs = []
    try:
        for i, name in enumerate(names):
            play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': [{
                'name': 'attach %s' % name,
                'netplumb.pipework.docker_veth': {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev',
                                                  'address': ['10.85.0.%d/24' % (i + 1)], 'vlan': 30}}]}]
            path = os.path.join(workdir, 'play%d.yml' % i)
            with open(path, 'w') as f:
                json.dump(play, f)
            argv = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', path]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,  # pylint: disable=consider-using-with
                                          env=ansible_env(), cwd=REPO))
        t0 = time.time()
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        took = time.time() - t0
    finally:
        run(['rm', '-rf', workdir], check=False)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert 'changed=1' in out, out
    pids = [container_pid(n) for n in names]
    assert ns_ping(pids[0], '10.85.0.2') and ns_ping(pids[1], '10.85.0.1')
    assert can_tcp(names[0], names[1], '10.85.0.2')
    ports = [r['host_ifname'] for r in records(store)]
    assert len(ports) == 2, (run(['find', store, '-ls']).stdout, outputs)
    assert len(ports) == 2 and all(ovs_row('Port', p, 'tag')['tag'] == 30 for p in ports)
    bridge_ports = run(['ovs-vsctl', 'list-ports', ovs_bridge]).stdout.split()
    assert sorted(bridge_ports) == sorted(ports)
    record_figure('two_playbooks_at_once', both_finished_s=took)
