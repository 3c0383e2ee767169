"""Scenario S3 through playbooks/multihost_vlan.yml on a real two-host SSH lab (lab/lab.py).

Per case: check mode changes nothing on unmigrated hosts; the playbook migrates both hosts (OVS, userspace
datapath) and attaches two containers per host on two VLANs; the full connectivity matrix (ping and TCP
from inside the containers) is exactly "same VLAN"; both hosts answer SSH on their addresses; a second run
reports changed=0; state=absent gives every host its uplink back (addresses, routes, MAC, MTU), removes the
attachments and the bridge. The three ways to run the playbook (from the repo root, from playbooks/, as
netplumb.pipework.multihost_vlan) are spread over the runs.
"""

from __future__ import annotations

import json
import time

import pytest

import connectivity_matrix as cm  # scripts/, put on sys.path by this directory's conftest

CASES = [
    pytest.param(dict(uplink='eth0', subnet='10.10.101.0/24', addresses=['10.10.101.105', '10.10.101.106'],
                      gateway='10.10.101.254', bridge='ovs0', vlans=(100, 200), net='192.168.0', ifname=None),
                 id='article-eth0'),
    pytest.param(dict(uplink='enp0s3', subnet='172.31.7.0/24', addresses=['172.31.7.11', '172.31.7.12'],
                      gateway='172.31.7.1', bridge='ovstrunk', vlans=(30, 4000), net='10.77.3', ifname='vl0'),
                 id='enp0s3-other-values'),
]
HOSTS = ['hostA', 'hostB']


def s3_setup(make_lab, case):
    env = make_lab(names=HOSTS, uplink=case['uplink'], subnet=case['subnet'], addresses=case['addresses'],
                   gateway=case['gateway'])
    low, high = case['vlans']
    # test1 VLAN low .1 + test2 VLAN high .2 on hostA; test3 VLAN low .3 + test4 VLAN high .4 on hostB
    layout = [('hostA', 't1', 1, low), ('hostA', 't2', 2, high), ('hostB', 't3', 3, low), ('hostB', 't4', 4, high)]
    nodes, containers = [], {h: [] for h in HOSTS}
    for host, suffix, last, vlan in layout:
        name = env.start(suffix)
        item = {'container': name, 'address': '%s.%d/24' % (case['net'], last), 'vlan': vlan}
        if case['ifname']:
            item['ifname'] = case['ifname']
        containers[host].append(item)
        nodes.append(cm.Node(name, '%s.%d' % (case['net'], last), str(vlan), host))
    env.write_vars(
        group_vars={'lab': {'multihost_vlan_uplink': case['uplink'], 'multihost_vlan_bridge': case['bridge'],
                            'multihost_vlan_datapath_type': 'netdev'}},
        host_vars={h: {'multihost_vlan_containers': containers[h]} for h in HOSTS})
    return env, nodes


@pytest.mark.parametrize('case', CASES)
def test_s3_multihost_vlan(make_lab, case):
    env, nodes = s3_setup(make_lab, case)
    uplink, bridge = case['uplink'], case['bridge']
    before = {h: env.network(h, uplink) for h in HOSTS}
    assert all(before[h]['addresses'] for h in HOSTS), before

    # Check mode on unmigrated hosts: reports the change, touches nothing.
    run = env.playbook('multihost_vlan', how='repo', check=True)
    assert run.rc == 0, run.output
    assert all(run.changed(h) > 0 for h in HOSTS), run.output
    for host in HOSTS:
        assert env.network(host, uplink) == before[host], 'check mode changed %s' % host
        assert env.ovs(host, 'list-br') == [], 'check mode created a bridge on %s' % host
    assert all(env.container_links(n.name) == ['lo'] for n in nodes)

    # The real run, from playbooks/ (playbooks/ansible.cfg finds the collection).
    run = env.playbook('multihost_vlan', how='playbooks')
    assert run.rc == 0, run.output
    assert all(run.failed(h) == 0 and run.changed(h) > 0 for h in HOSTS), run.output
    for host, address in zip(HOSTS, case['addresses']):
        assert env.global_addresses(host, bridge) == ['%s/24' % address]
        assert env.global_addresses(host, uplink) == []
        ports = env.ovs(host, 'list-ports', bridge)
        assert uplink in ports and len(ports) == 3, ports

    matrix = cm.measure(nodes)
    matrix.ssh = cm.check_ssh(env.lab)
    text = cm.render(matrix, group_name='VLAN')
    assert matrix.ok, text
    # The acceptance pairs, named: t1<->t3 and t2<->t4 connect, t1->t2, t1->t4, t2->t3 do not.
    t1, t2, t3, t4 = (n.name for n in nodes)
    for src, dst, want in ((t1, t3, True), (t3, t1, True), (t2, t4, True), (t4, t2, True),
                           (t1, t2, False), (t1, t4, False), (t2, t3, False)):
        cell = matrix.cells[(src, dst)]
        assert (cell.ping, cell.tcp) == (want, want), text
    assert [c.address for c in matrix.ssh if c.ok] == case['addresses'], text

    # Idempotence, as the installed collection's playbook.
    run = env.playbook('multihost_vlan', how='fqcn')
    assert run.rc == 0, run.output
    assert all(run.changed(h) == 0 for h in HOSTS), run.output

    # Undo: containers detached, the uplink exactly as before, the bridge gone, hosts reachable.
    run = env.playbook('multihost_vlan', how='repo', extra_vars={'multihost_vlan_state': 'absent'})
    assert run.rc == 0, run.output
    for host in HOSTS:
        assert env.network(host, uplink) == before[host], run.output
        assert env.ovs(host, 'list-br') == [], run.output
    assert all(env.container_links(n.name) == ['lo'] for n in nodes)
    ok, checks = env.ssh_ok()
    assert ok, checks
    run = env.playbook('multihost_vlan', how='repo', extra_vars={'multihost_vlan_state': 'absent'})
    assert run.rc == 0 and all(run.changed(h) == 0 for h in HOSTS), run.output


def test_failing_host_stops_the_rollout(make_lab):
    """serial 1 / max_fail_percentage 0 (the defaults): hostA's migration fails its probe and reverts, the play
    stops there, hostB is never touched. With -e multihost_vlan_serial=2 -e multihost_vlan_max_fail_percentage=50
    the same failure does not stop hostB."""
    case = CASES[0].values[0]
    env = s3_setup(make_lab, case)[0]
    before = {h: env.network(h, case['uplink']) for h in HOSTS}
    # Nobody answers at .77: hostA's probe fails right after the change.
    env.write_vars(host_vars={'hostA': {'multihost_vlan_containers': [], 'multihost_vlan_probe': '10.10.101.77',
                                        'multihost_vlan_probe_timeout': 3}})

    run = env.playbook('multihost_vlan', how='repo')
    assert run.rc != 0, run.output
    assert 'probe failed' in run.output, run.output
    assert run.failed('hostA') == 1 and 'hostB' not in run.recap, run.output
    for host in HOSTS:
        assert env.network(host, case['uplink']) == before[host], run.output
    assert env.ovs('hostB', 'list-br') == [], 'hostB was touched after hostA failed'
    ok, checks = env.ssh_ok()
    assert ok, checks

    run = env.playbook('multihost_vlan', how='repo',
                       extra_vars={'multihost_vlan_serial': 2, 'multihost_vlan_max_fail_percentage': 50})
    assert run.rc != 0, run.output
    assert run.failed('hostA') == 1 and run.failed('hostB') == 0 and run.changed('hostB') > 0, run.output
    assert env.network('hostA', case['uplink']) == before['hostA'], run.output
    assert env.global_addresses('hostB', case['bridge']) == ['%s/24' % case['addresses'][1]]
    ok, checks = env.ssh_ok()
    assert ok, checks


def test_cut_management_path_reverts_by_itself(make_lab):
    """The migration works on the host (its probe of the gateway answers) but the controller cannot reach it
    over the new path: SSH replies leaving through the bridge are dropped (an iptables rule inside the lab
    host). The role's confirmation over a new connection never happens, the play fails saying so, and the
    host puts its uplink back by itself after multihost_vlan_rollback_timeout; then it answers SSH again."""
    env = make_lab(names=['hostA'], uplink='eth0')
    env.write_vars(group_vars={'lab': {'multihost_vlan_bridge': 'ovs0', 'multihost_vlan_datapath_type': 'netdev',
                                       'multihost_vlan_rollback_timeout': 45}})
    before = env.network('hostA', 'eth0')
    env.lab.exec('hostA', ['iptables', '-I', 'OUTPUT', '-o', 'ovs0', '-p', 'tcp', '--sport', '22', '-j', 'DROP'])

    started = time.monotonic()
    run = env.playbook('multihost_vlan', how='repo')
    assert run.rc != 0 and run.failed('hostA') == 1, run.output
    assert 'was not confirmed' in run.output and 'back by itself' in run.output, run.output

    deadline = started + 45 + 60
    while time.monotonic() < deadline:
        if env.network('hostA', 'eth0') == before and env.ssh_ok()[0]:
            break
        time.sleep(2)
    assert env.network('hostA', 'eth0') == before, 'the host did not revert by itself'
    ok, checks = env.ssh_ok()
    assert ok, checks
    statuses = [json.loads(open(p).read()).get('status') for p in env.records() if p.endswith('.json')]
    assert statuses == ['reverted'], statuses
