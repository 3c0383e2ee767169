# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Raw rtnetlink dumps of links, addresses and routes, decoded only as far as planning needs.

pyroute2 decodes every attribute of every message into objects; on a host with hundreds of namespaces that
decoding is most of a docker_veth run. This reader asks the kernel for the same dumps over a plain
``AF_NETLINK`` socket and unpacks with ``struct`` only the few attributes netlink_state's dicts carry. The
dicts are exactly those of ``netlink_state.link_from_msg`` / ``addr_from_msg`` / ``route_from_msg``.
Writes stay with pyroute2. Standard library only: no pyroute2 needed here.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLA_TYPE_MASK = 0x3fff  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 5, 10, 18
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 6, 7, 15
IFF_UP = 0x1

NLMSGHDR = struct.Struct('=IHHII')      # length, type, flags, seq, pid
IFINFOMSG = struct.Struct('=BxHiII')    # family, type, index, flags, change
IFADDRMSG = struct.Struct('=BBBBI')     # family, prefixlen, flags, scope, index
RTMSG = struct.Struct('=BBBBBBBBI')     # family, dst_len, src_len, tos, table, proto, scope, type, flags
RTATTR = struct.Struct('=HH')
U32 = struct.Struct('=I')
I32 = struct.Struct('=i')
RECV_SIZE = 1 << 16  # a dump part is at most 32 KiB


class DumpInterrupted(Exception):
    """The kernel flagged the dump NLM_F_DUMP_INTR: state changed while it was read; dump again."""


def open_socket():
    """A raw rtnetlink socket in the namespace of the calling thread (see netns.iproute_in)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | getattr(socket, 'SOCK_CLOEXEC', 0), NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


# ---- decoding (pure) ---------------------------------------------------------------------------

def attributes(data, offset, end):
    """{type: payload bytes} of the rtattrs in data[offset:end] (the first of a repeated type wins)."""
    attrs = {}
    while offset + 4 <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            break
        attrs.setdefault(kind & NLA_TYPE_MASK, data[offset + 4:offset + length])
        offset += (length + 3) & ~3
    return attrs


def _u32(attrs, kind):
    value = attrs.get(kind)
    return U32.unpack_from(value)[0] if value is not None and len(value) >= 4 else None


def _string(value):
    """pyroute2's asciiz: NULs stripped, UTF-8 decoded where it decodes."""
    if value is None:
        return None
    value = bytes(value).strip(b'\0')
    try:
        return value.decode('utf-8')
    except UnicodeDecodeError:
        return value


def _ip(family, value):
    """An address attribute as text (what pyroute2 returns), None when absent."""
    if value is None:
        return None
    if family == socket.AF_INET6 or (family != socket.AF_INET and len(value) == 16):
        return socket.inet_ntop(socket.AF_INET6, bytes(value[:16]))
    return socket.inet_ntop(socket.AF_INET, bytes(value[:4]))


def _mac(value):
    """IFLA_ADDRESS as pyroute2's l2addr decodes it: six lowercase hex bytes joined by ':'; '' when absent."""
    if not value:
        return ''
    return ':'.join('%02x' % b for b in bytearray(value[:6]))


def link_from_bytes(data, offset, end):
    """An RTM_NEWLINK payload (ifinfomsg + attributes) as netlink_state.link_from_msg's dict."""
    index, flags = IFINFOMSG.unpack_from(data, offset)[2:4]
    attrs = attributes(data, offset + IFINFOMSG.size, end)
    kind = None
    info = attrs.get(IFLA_LINKINFO)
    if info is not None:
        kind = _string(attributes(info, 0, len(info)).get(IFLA_INFO_KIND))
    return {
        'index': index,
        'name': _string(attrs.get(IFLA_IFNAME)),
        'kind': kind,
        'master': _u32(attrs, IFLA_MASTER),
        'mtu': _u32(attrs, IFLA_MTU),
        'mac': _mac(attrs.get(IFLA_ADDRESS)),
        'peer': _u32(attrs, IFLA_LINK),
        'up': bool(flags & IFF_UP),
    }


def addr_from_bytes(data, offset, end):
    """An RTM_NEWADDR payload as netlink_state.addr_from_msg's dict (IFA_LOCAL wins for IPv4)."""
    family, prefixlen, _flags, scope, index = IFADDRMSG.unpack_from(data, offset)
    attrs = attributes(data, offset + IFADDRMSG.size, end)
    address = _ip(family, attrs.get(IFA_ADDRESS))
    if family == socket.AF_INET and attrs.get(IFA_LOCAL):
        address = _ip(family, attrs.get(IFA_LOCAL))
    return {
        'index': index,
        'address': ipaddress.ip_interface('%s/%d' % (address, prefixlen)),
        'scope': scope,
    }


def route_from_bytes(data, offset, end):
    """An RTM_NEWROUTE payload as netlink_state.route_from_msg's dict (RTA_TABLE wins over rtm_table)."""
    family, dst_len, _src_len, _tos, table, proto, scope, rtype, _flags = RTMSG.unpack_from(data, offset)
    attrs = attributes(data, offset + RTMSG.size, end)
    dst = _ip(family, attrs.get(RTA_DST))
    gateway = _ip(family, attrs.get(RTA_GATEWAY))
    return {
        'family': family,
        'dst': ipaddress.ip_network('%s/%d' % (dst, dst_len)) if dst else None,
        'gateway': ipaddress.ip_address(gateway) if gateway else None,
        'oif': _u32(attrs, RTA_OIF),
        'table': _u32(attrs, RTA_TABLE) or table,
        'proto': proto,
        'scope': scope,
        'type': rtype,
        'priority': _u32(attrs, RTA_PRIORITY),
        'prefsrc': _ip(family, attrs.get(RTA_PREFSRC)),
    }


class DumpParser:
    """Feeds on the datagrams answering one dump request (sequence number ``seq``).

    ``feed`` returns True once the dump is complete (NLMSG_DONE). Messages of other sequence numbers (the
    rest of an earlier, abandoned request) are skipped. An error reply raises OSError with its errno; a dump
    the kernel flagged NLM_F_DUMP_INTR raises DumpInterrupted once it has been read to its end, so that the
    socket is left clean for the next request.
    """

    def __init__(self, seq, msg_type, decode):
        self.seq = seq
        self.msg_type = msg_type
        self.decode = decode
        self.items = []
        self.interrupted = False

    def feed(self, data):
        offset, size = 0, len(data)
        while offset + NLMSGHDR.size <= size:
            length, mtype, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
            if length < NLMSGHDR.size or offset + length > size:
                raise OSError(errno.EBADMSG, 'truncated netlink message (%d bytes at %d of %d)' % (length, offset, size))
            body, end = offset + NLMSGHDR.size, offset + length
            offset += (length + 3) & ~3
            if seq != self.seq:
                continue
            if flags & NLM_F_DUMP_INTR:
                self.interrupted = True
            if mtype == NLMSG_ERROR:
                code = -I32.unpack_from(data, body)[0] if end - body >= 4 else errno.EBADMSG
                if code:
                    raise OSError(code, os.strerror(code))
                return True  # an acknowledgement: nothing (more) to read
            if mtype == NLMSG_DONE:
                code = -I32.unpack_from(data, body)[0] if end - body >= 4 else 0
                if code > 0:
                    raise OSError(code, os.strerror(code))
                if self.interrupted:
                    raise DumpInterrupted('netlink dump interrupted (NLM_F_DUMP_INTR)')
                return True
            if mtype == NLMSG_OVERRUN:
                raise OSError(errno.ENOBUFS, 'netlink overrun')
            if mtype == self.msg_type:
                self.items.append(self.decode(data, body, end))
        return False


# ---- the socket --------------------------------------------------------------------------------

class RawReader:
    """Dumps over one raw rtnetlink socket (its own, separate from pyroute2's)."""

    def __init__(self, sock=None):
        self.sock = sock if sock is not None else open_socket()
        self.seq = 0

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def dump(self, request_type, header, reply_type, decode):
        self.seq = (self.seq + 1) & 0xffffffff or 1
        parser = DumpParser(self.seq, reply_type, decode)
        self.sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(header), request_type, NLM_F_REQUEST | NLM_F_DUMP,
                                     self.seq, 0) + header)
        done = False
        while not done:
            data, _ancdata, flags, _addr = self.sock.recvmsg(RECV_SIZE)
            if flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, 'netlink reply larger than %d bytes' % RECV_SIZE)
            done = parser.feed(data)
        return parser.items

    def links(self):
        return self.dump(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), RTM_NEWLINK, link_from_bytes)

    def addrs(self):
        return self.dump(RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), RTM_NEWADDR, addr_from_bytes)

    def routes(self, family):
        return self.dump(RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0), RTM_NEWROUTE, route_from_bytes)
