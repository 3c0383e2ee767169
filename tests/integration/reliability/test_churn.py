"""docker_veth keeps working while other processes create and delete links in the same namespace.

A busy Docker host adds and removes veths all the time; the kernel flags a netlink dump that saw such a
change (NLM_F_DUMP_INTR) and pyroute2 raises "dump interrupted". The module must read the dump again, not
fail. A churn process in the test's host namespace adds and deletes a veth pair every 20 ms (about 100 link
changes a second, more than a busy Docker host makes) while one docker_veth task attaches (then removes)
200 ``netns`` targets on a Linux bridge there. With ``DUMP_ATTEMPTS`` set to 1 (no retry), about
half of these runs failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from nphelpers import run, run_module, suffix

N = 200
CHURN = r'''
import sys
import time
from pyroute2 import IPRoute
ipr = IPRoute()
name = sys.argv[1]
count = 0
sys.stdout.write('ready\n'); sys.stdout.flush()
while True:
    ipr.link('add', ifname=name + 'a', kind='veth', peer=name + 'b')
    ipr.link('del', ifname=name + 'a')
    time.sleep(0.02)
    count += 1
    if count % 10 == 0:
        with open(sys.argv[2], 'w') as f:
            f.write(str(count))
'''


@pytest.fixture
def churn_host(tmp_path):
    tag = suffix()
    host = 'npchurnH%s' % tag
    names = ['npchurn%s%03d' % (tag, i) for i in range(N)]
    run(['ip', 'netns', 'add', host])
    try:
        run(['ip', 'netns', 'exec', host, 'ip', 'link', 'add', 'brchurn', 'type', 'bridge'])
        run(['ip', 'netns', 'exec', host, 'ip', 'link', 'set', 'brchurn', 'up'])
        proc = subprocess.run(['ip', '-batch', '-'], input=''.join('netns add %s\n' % n for n in names),
                              text=True, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr
        yield host, names, tmp_path
    finally:
        subprocess.run(['ip', '-force', '-batch', '-'], input=''.join('netns del %s\n' % n for n in names),
                       text=True, capture_output=True, check=False)
        run(['ip', 'netns', 'del', host], check=False)


def start_churn(host, counter):
    proc = subprocess.Popen(['ip', 'netns', 'exec', host, sys.executable, '-c', CHURN, 'npch', str(counter)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'ready', proc.stderr.read()
    return proc


def churned(counter):
    try:
        with open(counter) as f:
            return int(f.read() or 0)
    except (IOError, ValueError):
        return 0


def test_attach_and_remove_200_while_links_churn(churn_host):
    host, names, tmp = churn_host
    counter = tmp / 'churn-count'
    churn = start_churn(host, counter)
    try:
        time.sleep(0.5)
        before = churned(counter)
        items = [{'netns': n, 'address': ['10.201.%d.%d/16' % (i // 250, i % 250 + 1)]} for i, n in enumerate(names)]
        failed, res = run_module('netplumb.pipework.docker_veth', {'bridge': 'brchurn', 'attachments': items},
                                 netns=host)
        assert not failed, str(res)[:2000]
        assert [a['action'] for a in res['attachments']] == ['created'] * N
        failed, res = run_module('netplumb.pipework.docker_veth',
                                 {'attachments': [{'netns': n, 'state': 'absent'} for n in names]}, netns=host)
        assert not failed, str(res)[:2000]
        assert [a['action'] for a in res['attachments']] == ['removed'] * N
        during = churned(counter) - before
    finally:
        os.kill(churn.pid, signal.SIGTERM)  # ip netns exec execs python: this PID is the churn loop
        churn.wait(timeout=10)
    print('\nchurn: %d veth pairs added and deleted during the two runs' % during)
    assert churn.returncode == -signal.SIGTERM, churn.stderr.read()[-2000:]  # it churned until stopped
    assert during > 50, 'the churn process hardly ran (%d), the test proves nothing' % during
