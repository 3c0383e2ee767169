"""bench/run.py --smoke: the benchmark still runs from the collection's current layout, every method once.

One run of `python3 bench/run.py --smoke` (N=2 on one lab host "npsmoke": the one-task run and its no-op
re-run, the loop, ovs-docker, the floor, the ping task, one multi-host round, NAT at 2 ports, memory at 2
namespaces, the profile with components.py, the AnsiballZ payload sizes), results and report in a
temporary directory. It checks that every section wrote the results.json keys bench/report.py reads,
that every method's wiring verified, and that the published figures (docs/performance.*,
bench/results/latest.json) were left alone. No duration is asserted. Costs about a minute (three lab
builds of one host, a dozen ansible-playbook runs); needs root, dockerd and Open vSwitch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PUBLISHED = [os.path.join(REPO, 'docs', 'performance.md'), os.path.join(REPO, 'docs', 'performance.png'),
             os.path.join(REPO, 'bench', 'results', 'latest.json')]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='the benchmark needs root (lab namespaces, OVS, Docker)')


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench-smoke')
    before = [_stamp(p) for p in PUBLISHED]
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'run.py'), '--smoke', '--no-setup',
                           '--out', str(out)], capture_output=True, text=True, cwd=REPO, timeout=900, check=False)
    assert proc.returncode == 0, 'bench/run.py --smoke failed:\n%s\n%s' % (proc.stdout[-4000:], proc.stderr[-4000:])
    with open(out / 'results.json') as f:
        results = json.load(f)
    return {'out': out, 'results': results, 'before': before, 'stdout': proc.stdout}


def test_every_single_host_method_ran_once_at_n2(smoke):
    single = smoke['results']['single']['2']
    for key in ('a', 'c', 'd', 'e'):
        assert len(single[key]) == 1, key
        assert single[key][0]['wall'] > 0, key
    assert single['a'][0]['changed'] is True
    assert single['e'][0]['changed'] is False, 'the no-op re-run changed something'
    assert single['d'][0]['phases']['total'] > 0
    assert smoke['results']['loop']['2']['items'] == 2
    assert smoke['results']['fixed'][0]['wall'] > 0


def test_every_section_wrote_its_keys(smoke):
    res = smoke['results']
    assert res['multihost']['1'][0]['docker_veth_elapsed']
    assert res['memory']['ok'] is True and res['memory']['n'] == 2
    assert set(res['profile']) == {'first', 'noop', 'components'}
    assert res['profile']['noop']['changed'] is False
    assert res['profile']['components']['n'] == 2
    assert res['nat']['rc'] == 0 and res['nat']['data']['ports'] == 2
    assert res['payload']['docker_veth']['zip_bytes'] > 0
    for key in ('date', 'stamp', 'args', 'machine', 'notes', 'bench_seconds', 'multihost_playbook', 'nat_probe'):
        assert key in res, key


def test_every_wiring_verified(smoke):
    failed = [n for n in smoke['results']['notes'] if 'failed' in n or 'aborted' in n]
    assert not failed, failed
    assert smoke['stdout'].count('  verify ') >= 5, smoke['stdout'][-3000:]


def test_report_stays_with_the_results(smoke):
    assert (smoke['out'] / 'performance.md').stat().st_size > 0
    assert [_stamp(p) for p in PUBLISHED] == smoke['before'], 'a smoke run changed the published figures'


def test_nothing_left_behind(smoke):
    names = subprocess.run(['docker', 'ps', '-a', '--filter', 'name=npsmoke-c', '--format', '{{.Names}}'],
                           capture_output=True, text=True, check=True).stdout.split()
    assert not names, names
