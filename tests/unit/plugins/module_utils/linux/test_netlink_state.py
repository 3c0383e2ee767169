"""Dumps interrupted by concurrent link changes are read again; open-file room for large batches."""

from __future__ import annotations

import resource

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.common import fd_limit
from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netlink_state
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import NetlinkDumpInterrupted


class Msg(dict):
    def __init__(self, index, name):
        super().__init__(index=index, flags=1)
        self.attrs = {'IFLA_IFNAME': name, 'IFLA_MTU': 1500}

    def get_attr(self, name):
        return self.attrs.get(name)


class FlakyDumps:
    """get_links() raises mid-iteration (as pyroute2 does on NLM_F_DUMP_INTR) the first ``fail`` times."""

    def __init__(self, fail):
        self.fail = fail
        self.calls = 0

    def get_links(self):
        self.calls += 1
        yield Msg(1, 'lo')
        if self.calls <= self.fail:
            raise NetlinkDumpInterrupted()
        yield Msg(2, 'eth0')


def test_interrupted_dump_is_read_again():
    ipr = FlakyDumps(fail=3)
    assert [ln['name'] for ln in netlink_state.read_links(ipr)] == ['lo', 'eth0']
    assert ipr.calls == 4


def test_dump_interrupted_every_time_gives_up(monkeypatch):
    monkeypatch.setattr(netlink_state.time, 'sleep', lambda seconds: None)
    ipr = FlakyDumps(fail=netlink_state.DUMP_ATTEMPTS)
    with pytest.raises(NetlinkDumpInterrupted):
        netlink_state.read_links(ipr)
    assert ipr.calls == netlink_state.DUMP_ATTEMPTS


def test_soft_open_file_limit_raised_for_a_large_batch():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < fd_limit.needed(600):
        pytest.skip('hard limit %d too low to test raising the soft limit' % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert fd_limit.ensure_open_files(600) == fd_limit.needed(600)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == fd_limit.needed(600)
        assert fd_limit.ensure_open_files(10) == fd_limit.needed(600)  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_batch_beyond_the_hard_limit_is_refused_naming_the_option(monkeypatch):
    monkeypatch.setattr(fd_limit.resource, 'getrlimit', lambda what: (1024, 1024))
    with pytest.raises(PipeworkError, match=r'attachments: 600 target namespaces need about 4328 open files .* 1024'):
        fd_limit.ensure_open_files(600)
