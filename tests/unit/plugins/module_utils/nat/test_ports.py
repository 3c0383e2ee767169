"""nat_ports: /proc/net parsing, which sockets a mapping would shadow, free port choice."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.ports import (
    BoundPorts, PortAllocator, decode_address, parse_proc_net, parse_sctp_eps, read_port_range)

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0A00000A:8001 0B00000A:0016 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000
"""
SCTP = """ ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS
ffff8880 ffff8881 2   10  5    9000      0 12345 10.0.0.1 10.0.0.2
"""


def test_decode():
    assert decode_address('0100007F') == '127.0.0.1'
    assert decode_address('0A00000A') == '10.0.0.10'
    assert decode_address('00000000000000000000000001000000') == '::1'
    assert ipaddress.ip_address(decode_address('0000000000000000FFFF00000100007F')).ipv4_mapped == \
        ipaddress.ip_address('127.0.0.1')
    with pytest.raises(ValueError):
        decode_address('0100')


def test_parse():
    assert parse_proc_net(TCP, 'tcp') == [('0.0.0.0', 8080, '0A'), ('127.0.0.1', 80, '0A'), ('10.0.0.10', 32769, '01')]
    assert parse_proc_net(TCP6, 'tcp')[0] == ('::', 8081, '0A')
    assert parse_sctp_eps(SCTP) == [('10.0.0.1', 9000, '0A'), ('10.0.0.2', 9000, '0A')]


def bound():
    return BoundPorts({'tcp': parse_proc_net(TCP, 'tcp') + parse_proc_net(TCP6, 'tcp'),
                       'udp': [('10.0.0.1', 53, '07')], 'sctp': parse_sctp_eps(SCTP)})


def test_binder():
    b = bound()
    assert b.binder('tcp', 4, None, 8080) == '0.0.0.0:8080'
    assert b.binder('tcp', 4, '10.9.9.9', 8080) == '0.0.0.0:8080'
    assert b.binder('tcp', 4, None, 8081) == '[::]:8081'           # maybe dual-stack
    assert b.binder('tcp', 6, None, 8080) is None
    assert b.binder('tcp', 4, None, 80) == '127.0.0.1:80'
    assert b.binder('tcp', 4, None, 80, skip_loopback=True) is None
    assert b.binder('tcp', 4, '127.0.0.1', 8082) == '127.0.0.1:8082'  # v4-mapped v6 socket
    assert b.binder('tcp', 4, None, 32769) is None                 # connected, not listening
    assert b.binder('udp', 4, '10.0.0.1', 53) == '10.0.0.1:53'
    assert b.binder('udp', 4, '10.0.0.2', 53) is None
    assert b.binder('sctp', 4, None, 9000) == '10.0.0.1:9000'
    assert b.ports_in_use('tcp') == {8080, 80, 32769, 8081, 8082}


def test_allocator():
    a = PortAllocator((100, 103), {'tcp': {100, 102}})
    assert [a.take('tcp', 'x'), a.take('tcp', 'x'), a.take('udp', 'x')] == [101, 103, 100]
    with pytest.raises(PipeworkError) as err:
        a.take('tcp', '80')
    assert "'80'" in err.value.msg and '100-103' in err.value.msg


def test_port_range(tmp_path):
    path = tmp_path / 'range'
    path.write_text('32768\t60999\n')
    assert read_port_range(str(path)) == (32768, 60999)
    path.write_text('5 2\n')
    with pytest.raises(PipeworkError):
        read_port_range(str(path))
    with pytest.raises(PipeworkError):
        read_port_range(str(tmp_path / 'missing'))
