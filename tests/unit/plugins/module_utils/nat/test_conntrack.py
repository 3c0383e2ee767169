"""nat_conntrack argument lists and exit-code handling; nat_host keys; nat_target destinations."""

from __future__ import annotations

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.nat import conntrack as nat_conntrack
from ansible_collections.netplumb.pipework.plugins.module_utils.nat import host as nat_host
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.target import destination_target


def test_flush_argv():
    assert nat_conntrack.flush_argv('/usr/sbin/conntrack', 4, 5300) == [
        '/usr/sbin/conntrack', '-D', '-p', 'udp', '--orig-port-dst', '5300']
    assert nat_conntrack.flush_argv('conntrack', 6, 53)[:4] == ['conntrack', '-f', 'ipv6', '-D']


def test_flush_treats_nothing_to_delete_as_success():
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[-1] == '1':
            return 1, '', 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n'
        if argv[-1] == '2':
            return 0, '', 'conntrack v1.4.7 (conntrack-tools): 1 flow entries have been deleted.\n'
        return 2, '', 'conntrack: Operation not permitted'
    done, warnings = nat_conntrack.flush(run, 'conntrack', [(4, 1), (4, 2), (6, 3)])
    assert done == ['IPv4 udp/1', 'IPv4 udp/2'] and len(warnings) == 1 and 'udp' in warnings[0].lower()
    assert len(calls) == 3
    assert nat_conntrack.flush(run, None, [(4, 1)])[1][0].startswith('conntrack (conntrack-tools) is not installed')
    assert nat_conntrack.flush(run, 'conntrack', []) == ([], [])


def test_sysctl_keys(tmp_path):
    assert nat_host.forwarding_key(4) == 'net/ipv4/ip_forward'
    assert nat_host.dotted(nat_host.localnet_key('br-web.10')) == 'net.ipv4.conf.br-web/10.route_localnet'
    (tmp_path / 'net' / 'ipv4').mkdir(parents=True)
    (tmp_path / 'net' / 'ipv4' / 'ip_forward').write_text('0\n')
    s = nat_host.Sysctl(str(tmp_path))
    assert s.get('net/ipv4/ip_forward') == '0'
    s.set('net/ipv4/ip_forward', '1')
    assert s.get('net/ipv4/ip_forward') == '1'
    assert s.get('net/ipv6/conf/all/forwarding') is None
    with pytest.raises(PipeworkError):
        s.set('net/nope/x', '1')


def test_destination_targets():
    t = destination_target('x', '172.30.0.9/16')
    assert t.name == '172.30.0.9' and str(t.address(4).network) == '172.30.0.0/16'
    assert str(destination_target('x', 'fd00::9').address(6)) == 'fd00::9/128'
    for bad in ('127.0.0.1', '0.0.0.0', 'web', '224.0.0.1'):
        with pytest.raises(PipeworkError):
            destination_target('x', bad)
