"""Issue 2, acceptance 5: one docker_veth task attaches 200 containers correctly (no timing asserted)."""

from __future__ import annotations

import subprocess

from nphelpers import IMAGE, docker_exec, run, run_module, suffix

MODULE = 'netplumb.pipework.docker_veth'
COUNT = 200


def start_many(names):
    """Start containers a few at a time (docker run is the slow part of this test, not the module)."""
    pending = list(names)
    while pending:
        batch, pending = pending[:8], pending[8:]
        procs = [subprocess.Popen(['docker', 'run', '-d', '--name', n, '--net=none', '--init', IMAGE, 'sleep', '1000000'],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for n in batch]
        for p in procs:
            assert p.wait() == 0, p.stderr.read()


def test_two_hundred_attachments_in_one_task(containers, ovs_bridge):
    tag = suffix()
    names = ['np%s-s%03d' % (tag, i) for i in range(COUNT)]
    containers.names.extend(names)
    start_many(names)
    # Two VLANs, one /16: even containers on VLAN 10, odd on VLAN 20.
    items = [{'container': n, 'address': ['10.77.%d.%d/16' % (i // 250, i % 250 + 1)], 'vlan': 10 + 10 * (i % 2)}
             for i, n in enumerate(names)]
    failed, res = run_module(MODULE, {'bridge': ovs_bridge, 'datapath_type': 'netdev', 'attachments': items})
    assert not failed, res.get('msg')
    assert [a['action'] for a in res['attachments']] == ['created'] * COUNT
    assert len(set(a['host_ifname'] for a in res['attachments'])) == COUNT
    ports = run(['ovs-vsctl', 'list-ports', ovs_bridge]).stdout.split()
    assert len(ports) == COUNT

    def ip_of(i):
        return items[i]['address'][0].split('/')[0]

    # Every container answers on its VLAN (pinged from the first of its VLAN, in one shell loop per
    # VLAN: a docker exec per ping would cost more than the module); a sample across VLANs gets nothing.
    for first in (0, 1):
        targets = ' '.join(ip_of(i) for i in range(first + 2, COUNT, 2))
        out = docker_exec(names[first], 'sh', '-c',
                          'for ip in %s; do ping -c 1 -W 2 $ip >/dev/null || echo "no reply from $ip"; done' % targets,
                          timeout=600)
        assert out.returncode == 0 and out.stdout == '', out.stdout
    for i in (1, 3, COUNT - 1):
        assert docker_exec(names[0], 'ping', '-c', '1', '-W', '1', ip_of(i)).returncode != 0
    print('module time for %d attachments: %.2f s' % (COUNT, res['elapsed']))

    failed, res = run_module(MODULE, {'bridge': ovs_bridge, 'datapath_type': 'netdev', 'attachments': items})
    assert not failed and not res['changed']
    failed, res = run_module(MODULE, {'state': 'absent', 'attachments': [{'container': n} for n in names]})
    assert not failed and [a['action'] for a in res['attachments']] == ['removed'] * COUNT
    assert run(['ovs-vsctl', 'list-ports', ovs_bridge]).stdout.split() == []
