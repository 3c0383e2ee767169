"""netlink_dump: raw rtnetlink replies, built byte by byte here, decode to netlink_state's dicts."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netlink_dump as nd
from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netlink_state

PID = 4242


def rtattr(kind, payload):
    length = 4 + len(payload)
    return struct.pack('=HH', length, kind) + payload + b'\0' * ((4 - length % 4) % 4)


def u32(kind, value):
    return rtattr(kind, struct.pack('=I', value))


def asciiz(kind, text):
    return rtattr(kind, text.encode() + b'\0')


def inet(kind, text):
    family = socket.AF_INET6 if ':' in text else socket.AF_INET
    return rtattr(kind, socket.inet_pton(family, text))


def nlmsg(mtype, payload, seq, flags=nd.NLM_F_MULTI):
    return struct.pack('=IHHII', 16 + len(payload), mtype, flags, seq, PID) + payload


def link_msg(seq, index, name, flags=0x1043, attrs=b'', nlflags=nd.NLM_F_MULTI):
    body = struct.pack('=BxHiII', socket.AF_UNSPEC, 1, index, flags, 0) + asciiz(nd.IFLA_IFNAME, name) + attrs
    return nlmsg(nd.RTM_NEWLINK, body, seq, nlflags)


def done(seq, code=0, flags=nd.NLM_F_MULTI):
    return nlmsg(nd.NLMSG_DONE, struct.pack('=i', code), seq, flags)


def error(seq, code):
    return nlmsg(nd.NLMSG_ERROR, struct.pack('=i', -code) + struct.pack('=IHHII', 20, nd.RTM_GETLINK, 0x301, seq, 0), seq, 0)


VETH = (rtattr(nd.IFLA_ADDRESS, bytes.fromhex('02AABBCCDD0E')) + u32(nd.IFLA_MTU, 1400) + u32(nd.IFLA_LINK, 7)
        + u32(nd.IFLA_MASTER, 3)
        + rtattr(nd.IFLA_LINKINFO | 0x8000, asciiz(nd.IFLA_INFO_KIND, 'veth') + rtattr(2, b'\1\2\3\4')))


def test_link_message_decodes_to_link_from_msg_dict():
    data = link_msg(1, 9, 'veth0', attrs=VETH)
    assert nd.link_from_bytes(data, 16, len(data)) == {
        'index': 9, 'name': 'veth0', 'kind': 'veth', 'master': 3, 'mtu': 1400, 'mac': '02:aa:bb:cc:dd:0e',
        'peer': 7, 'up': True}


def test_link_without_optional_attributes_gives_none_and_empty_mac():
    data = link_msg(1, 1, 'lo', flags=0x8)
    assert nd.link_from_bytes(data, 16, len(data)) == {
        'index': 1, 'name': 'lo', 'kind': None, 'master': None, 'mtu': None, 'mac': '', 'peer': None, 'up': False}


def addr_payload(family, prefixlen, scope, index, attrs):
    return struct.pack('=BBBBI', family, prefixlen, 0x80, scope, index) + attrs


def test_ipv4_address_prefers_ifa_local_over_the_peer_address():
    body = addr_payload(socket.AF_INET, 32, 0, 3, inet(nd.IFA_ADDRESS, '10.1.1.2') + inet(nd.IFA_LOCAL, '10.1.1.1'))
    assert nd.addr_from_bytes(body, 0, len(body)) == {
        'index': 3, 'address': ipaddress.ip_interface('10.1.1.1/32'), 'scope': 0}


def test_ipv6_address_uses_ifa_address():
    body = addr_payload(socket.AF_INET6, 64, 253, 4, inet(nd.IFA_ADDRESS, 'fe80::1') + inet(nd.IFA_LOCAL, 'fe80::2'))
    got = nd.addr_from_bytes(body, 0, len(body))
    assert got == {'index': 4, 'address': ipaddress.ip_interface('fe80::1/64'), 'scope': 253}
    assert isinstance(got['address'], ipaddress.IPv6Interface)


def route_payload(family, dst_len, table, proto, scope, rtype, attrs):
    return struct.pack('=BBBBBBBBI', family, dst_len, 0, 0, table, proto, scope, rtype, 0) + attrs


def test_route_with_gateway_metric_prefsrc_and_a_table_above_255():
    attrs = (u32(nd.RTA_TABLE, 1000) + inet(nd.RTA_DST, '203.0.113.0') + u32(nd.RTA_PRIORITY, 50)
             + inet(nd.RTA_PREFSRC, '192.0.2.1') + inet(nd.RTA_GATEWAY, '192.0.2.254') + u32(nd.RTA_OIF, 2))
    body = route_payload(socket.AF_INET, 24, 252, 4, 0, 1, attrs)
    assert nd.route_from_bytes(body, 0, len(body)) == {
        'family': socket.AF_INET, 'dst': ipaddress.ip_network('203.0.113.0/24'),
        'gateway': ipaddress.ip_address('192.0.2.254'), 'oif': 2, 'table': 1000, 'proto': 4, 'scope': 0,
        'type': 1, 'priority': 50, 'prefsrc': '192.0.2.1'}


def test_ipv6_default_route_has_no_dst_and_takes_rtm_table_without_rta_table():
    body = route_payload(socket.AF_INET6, 0, 254, 3, 0, 1, inet(nd.RTA_GATEWAY, '2001:db8::1') + u32(nd.RTA_OIF, 5))
    assert nd.route_from_bytes(body, 0, len(body)) == {
        'family': socket.AF_INET6, 'dst': None, 'gateway': ipaddress.ip_address('2001:db8::1'), 'oif': 5,
        'table': 254, 'proto': 3, 'scope': 0, 'type': 1, 'priority': None, 'prefsrc': None}


class FakeSocket:
    """Hands out prepared datagrams, one per recvmsg, and records what was sent."""

    def __init__(self, *datagrams):
        self.datagrams = list(datagrams)
        self.sent = []
        self.closed = False

    def send(self, data):
        self.sent.append(data)
        return len(data)

    def recvmsg(self, size):
        data = self.datagrams.pop(0)
        return data, [], socket.MSG_TRUNC if len(data) > size else 0, (0, 0)

    def close(self):
        self.closed = True


def test_multipart_dump_over_several_datagrams_skipping_other_sequence_numbers():
    sock = FakeSocket(
        link_msg(7, 99, 'stale') + done(7),                  # the tail of an abandoned request
        link_msg(1, 1, 'lo') + link_msg(1, 2, 'eth0', attrs=VETH),
        link_msg(1, 3, 'eth1') + done(1))
    reader = nd.RawReader(sock)
    assert [(ln['index'], ln['name'], ln['kind']) for ln in reader.links()] == [
        (1, 'lo', None), (2, 'eth0', 'veth'), (3, 'eth1', None)]
    length, mtype, flags, seq, pid = struct.unpack_from('=IHHII', sock.sent[0])
    assert (length, mtype, flags, seq, pid) == (32, nd.RTM_GETLINK, nd.NLM_F_REQUEST | nd.NLM_F_DUMP, 1, 0)
    assert not sock.datagrams
    reader.close()
    assert sock.closed


def test_each_request_has_its_own_sequence_number():
    sock = FakeSocket(done(1), done(2), done(3), done(4))
    reader = nd.RawReader(sock)
    assert reader.links() == [] and reader.addrs() == []
    assert reader.routes(socket.AF_INET) == [] and reader.routes(socket.AF_INET6) == []
    sent = [struct.unpack_from('=IHHII', m) for m in sock.sent]
    assert [(m[1], m[3]) for m in sent] == [(nd.RTM_GETLINK, 1), (nd.RTM_GETADDR, 2), (nd.RTM_GETROUTE, 3), (nd.RTM_GETROUTE, 4)]
    assert [sock.sent[i][16] for i in (2, 3)] == [socket.AF_INET, socket.AF_INET6]  # rtm_family


def test_error_reply_raises_oserror_with_its_errno():
    reader = nd.RawReader(FakeSocket(error(1, errno.EPERM)))
    with pytest.raises(OSError) as info:
        reader.links()
    assert info.value.errno == errno.EPERM


def test_error_in_done_raises_oserror():
    reader = nd.RawReader(FakeSocket(link_msg(1, 1, 'lo') + done(1, code=-errno.EINTR)))
    with pytest.raises(OSError) as info:
        reader.links()
    assert info.value.errno == errno.EINTR


def test_interrupted_dump_is_read_to_its_end_then_raises():
    sock = FakeSocket(link_msg(1, 1, 'lo'), link_msg(1, 2, 'eth0', nlflags=nd.NLM_F_MULTI | nd.NLM_F_DUMP_INTR),
                      done(1, flags=nd.NLM_F_MULTI | nd.NLM_F_DUMP_INTR))
    with pytest.raises(nd.DumpInterrupted):
        nd.RawReader(sock).links()
    assert not sock.datagrams  # nothing of the interrupted dump is left for the next request


def test_truncated_datagram_is_refused():
    reader = nd.RawReader(FakeSocket(b'x' * (nd.RECV_SIZE + 1)))
    with pytest.raises(OSError) as info:
        reader.links()
    assert info.value.errno == errno.EMSGSIZE


def test_retry_dump_reads_an_interrupted_raw_dump_again(monkeypatch):
    monkeypatch.setattr(netlink_state.time, 'sleep', lambda seconds: None)
    intr = nd.NLM_F_MULTI | nd.NLM_F_DUMP_INTR
    sock = FakeSocket(link_msg(1, 1, 'lo', nlflags=intr) + done(1, flags=intr),
                      link_msg(2, 1, 'lo', nlflags=intr) + done(2, flags=intr),
                      link_msg(3, 1, 'lo') + link_msg(3, 2, 'eth0') + done(3))
    assert [ln['name'] for ln in netlink_state.read_links(None, raw=nd.RawReader(sock))] == ['lo', 'eth0']
    assert len(sock.sent) == 3


def test_read_namespace_with_a_raw_reader_uses_no_pyroute2_socket():
    addr = addr_payload(socket.AF_INET, 24, 0, 2, inet(nd.IFA_LOCAL, '192.0.2.5') + inet(nd.IFA_ADDRESS, '192.0.2.5'))
    route = route_payload(socket.AF_INET, 0, 254, 3, 0, 1, inet(nd.RTA_GATEWAY, '192.0.2.1') + u32(nd.RTA_OIF, 2))
    sock = FakeSocket(link_msg(1, 2, 'eth1') + done(1), nlmsg(nd.RTM_NEWADDR, addr, 2) + done(2),
                      nlmsg(nd.RTM_NEWROUTE, route, 3) + done(3), done(4))
    state = netlink_state.read_namespace(None, raw=nd.RawReader(sock))
    assert state.global_addresses(2) == [ipaddress.ip_interface('192.0.2.5/24')]
    assert [r['gateway'] for r in state.default_routes(4)] == [ipaddress.ip_address('192.0.2.1')]
    assert list(state.links) == ['eth1']
