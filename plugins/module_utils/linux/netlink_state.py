# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a namespace's links, addresses and routes with three netlink dumps, as plain dicts.

Plain dicts keep planning pure and testable; only attribute names present in pyroute2 0.7 and 0.9 are
used (Debian 12 ships 0.7). Given a netlink_dump.RawReader the same dicts come from raw dumps that skip
pyroute2's decoding (docker_veth reads that way); without one, from pyroute2's IPRoute.
"""

from __future__ import annotations

import ipaddress
import socket
import time

from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_dump import DumpInterrupted

try:
    from pyroute2.netlink.exceptions import NetlinkDumpInterrupted
except ImportError:  # not a pyroute2 of this era: nothing to retry on
    class NetlinkDumpInterrupted(Exception):
        pass

DUMP_ATTEMPTS = 20
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254


def _attr(msg, name):
    return msg.get_attr(name)


def link_from_msg(msg):
    info = _attr(msg, 'IFLA_LINKINFO')
    kind = info.get_attr('IFLA_INFO_KIND') if info is not None else None
    return {
        'index': msg['index'],
        'name': _attr(msg, 'IFLA_IFNAME'),
        'kind': kind,
        'master': _attr(msg, 'IFLA_MASTER'),
        'mtu': _attr(msg, 'IFLA_MTU'),
        'mac': (_attr(msg, 'IFLA_ADDRESS') or '').lower(),
        'peer': _attr(msg, 'IFLA_LINK'),
        'up': bool(msg['flags'] & IFF_UP),
    }


def addr_from_msg(msg):
    address = _attr(msg, 'IFA_ADDRESS')
    if msg['family'] == socket.AF_INET and _attr(msg, 'IFA_LOCAL'):
        address = _attr(msg, 'IFA_LOCAL')
    return {
        'index': msg['index'],
        'address': ipaddress.ip_interface('%s/%d' % (address, msg['prefixlen'])),
        'scope': msg['scope'],
    }


def route_from_msg(msg):
    dst = _attr(msg, 'RTA_DST')
    family = msg['family']
    table = _attr(msg, 'RTA_TABLE') or msg['table']
    return {
        'family': family,
        'dst': ipaddress.ip_network('%s/%d' % (dst, msg['dst_len'])) if dst else None,
        'gateway': ipaddress.ip_address(_attr(msg, 'RTA_GATEWAY')) if _attr(msg, 'RTA_GATEWAY') else None,
        'oif': _attr(msg, 'RTA_OIF'),
        'table': table,
        'proto': msg['proto'],
        'scope': msg['scope'],
        'type': msg['type'],
        'priority': _attr(msg, 'RTA_PRIORITY'),
        'prefsrc': _attr(msg, 'RTA_PREFSRC'),
    }


class NamespaceState:
    """Links by name, global addresses by ifindex, and unicast main-table routes."""

    def __init__(self, links, addrs, routes):
        self.links = dict((link['name'], link) for link in links)
        self.by_index = dict((link['index'], link) for link in links)
        self.addrs = {}
        for a in addrs:
            self.addrs.setdefault(a['index'], []).append(a)
        self.routes = routes

    def global_addresses(self, index):
        """Addresses the operator manages: not link-local (fe80::/10 is the kernel's own), not host scope."""
        return sorted((a['address'] for a in self.addrs.get(index, [])
                       if a['scope'] < RT_SCOPE_LINK and not a['address'].ip.is_link_local),
                      key=_addr_key)

    def routes_via(self, index):
        """Main-table unicast routes through an interface that the kernel did not add itself."""
        return [r for r in self.routes
                if r['oif'] == index and r['table'] == RT_TABLE_MAIN and r['proto'] != RTPROT_KERNEL
                and r['type'] == 1 and not (r['dst'] is not None and r['dst'].is_link_local
                                            and r['dst'].version == 6)]

    def default_routes(self, version):
        return [r for r in self.routes
                if r['dst'] is None and r['table'] == RT_TABLE_MAIN and r['type'] == 1
                and r['family'] == (socket.AF_INET if version == 4 else socket.AF_INET6)]


def _addr_key(iface):
    return (iface.version, int(iface.ip), iface.network.prefixlen)


def retry_dump(read):
    """Run ``read`` (a dump turned into a list) again while the kernel reports it interrupted.

    The kernel sets NLM_F_DUMP_INTR when links or addresses change during a multi-part dump (a busy Docker
    host creates veths all the time); pyroute2 raises then. A fresh dump is consistent again. (Lookups of
    links this run made use one RTM_GETLINK per name instead, see veth_apply._link_index.)
    """
    for attempt in range(DUMP_ATTEMPTS):
        try:
            return read()
        except (NetlinkDumpInterrupted, DumpInterrupted):
            if attempt == DUMP_ATTEMPTS - 1:
                raise
            # Back off a little (10 ms doubling, at most 200 ms): changes tend to come in bursts.
            time.sleep(min(0.01 * 2 ** attempt, 0.2))
    return None  # not reached


def read_links(ipr, raw=None):
    """All links of ``ipr``'s namespace; with ``raw`` (a netlink_dump.RawReader) from its raw dump instead."""
    if raw is not None:
        return retry_dump(raw.links)
    return retry_dump(lambda: [link_from_msg(m) for m in ipr.get_links()])


def read_namespace(ipr, links=None, addrs=True, routes=True, raw=None):
    """Up to four dumps: links, addresses, IPv4 and IPv6 routes; callers skip what they do not need.

    With ``raw`` (a netlink_dump.RawReader on the same namespace) the dumps are raw and ``ipr`` is not used.
    """
    if links is None:
        links = read_links(ipr, raw=raw)
    if raw is not None:
        get_addrs, get_routes = raw.addrs, raw.routes
    else:
        def get_addrs():
            return [addr_from_msg(m) for m in ipr.get_addr()]

        def get_routes(family):
            return [route_from_msg(m) for m in ipr.get_routes(family=family)]
    addr_list = retry_dump(get_addrs) if addrs else []
    route_list = []
    if routes:
        route_list = retry_dump(lambda: get_routes(socket.AF_INET))
        route_list += retry_dump(lambda: get_routes(socket.AF_INET6))
    return NamespaceState(links, addr_list, route_list)


def sort_addresses(addresses):
    return sorted(addresses, key=_addr_key)
