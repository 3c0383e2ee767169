# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host ports: which are bound by local processes (``/proc/net/{tcp,tcp6,udp,udp6,sctp/eps}`` of the
namespace the module runs in), and the choice of free ones from ``net.ipv4.ip_local_port_range``.

A free port is the lowest one in the range that no mapping, no other DNAT rule and no local socket uses;
the choice is deterministic, so check mode reports the port a real run would take.
"""

from __future__ import annotations

import ipaddress
import os

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

PORT_RANGE_PATH = '/proc/sys/net/ipv4/ip_local_port_range'
TCP_LISTEN = '0A'


def read_port_range(path=PORT_RANGE_PATH):
    try:
        with open(path) as handle:
            lo, hi = (int(x) for x in handle.read().split()[:2])
    except (OSError, ValueError) as exc:
        raise PipeworkError('cannot read the local port range from %s: %s' % (path, exc))
    if not 1 <= lo <= hi <= 65535:
        raise PipeworkError('%s holds an unusable range %d-%d' % (path, lo, hi))
    return lo, hi


def decode_address(hex_addr):
    """/proc/net/tcp's address: IPv4 as one little-endian word, IPv6 as four (host byte order)."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    if len(raw) == 16:
        words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
        return str(ipaddress.IPv6Address(b''.join(words)))
    raise ValueError(hex_addr)


def parse_proc_net(text, proto):
    """[(ip, port, state)] from /proc/net/tcp-style text."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or ':' not in fields[1]:
            continue
        addr, port = fields[1].rsplit(':', 1)
        try:
            sockets.append((decode_address(addr), int(port, 16), fields[3]))
        except ValueError:
            continue
    return sockets


def parse_sctp_eps(text):
    """[(ip, port, 'LISTEN')] from /proc/net/sctp/eps (an endpoint may list several addresses)."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 9:
            continue
        try:
            port = int(fields[5])
        except ValueError:
            continue
        for addr in fields[8:]:
            try:
                sockets.append((str(ipaddress.ip_address(addr)), port, TCP_LISTEN))
            except ValueError:
                continue
    return sockets


class BoundPorts:
    """Local sockets per protocol: {proto: [(ip, port, state)]}."""

    def __init__(self, sockets=None):
        self.sockets = sockets or {'tcp': [], 'udp': [], 'sctp': []}

    @classmethod
    def read(cls, proc_net='/proc/net'):
        sockets = {'tcp': [], 'udp': [], 'sctp': []}
        for proto, names in (('tcp', ('tcp', 'tcp6')), ('udp', ('udp', 'udp6'))):
            for name in names:
                text = _read(os.path.join(proc_net, name))
                if text:
                    sockets[proto].extend(parse_proc_net(text, proto))
        text = _read(os.path.join(proc_net, 'sctp', 'eps'))
        if text:
            sockets['sctp'].extend(parse_sctp_eps(text))
        return cls(sockets)

    def binder(self, proto, family, host_ip, port, skip_loopback=False):
        """The local socket address that a new mapping of this host port would shadow, or None.

        TCP counts listening sockets, UDP and SCTP every bound socket. A socket on the wildcard address
        (``0.0.0.0`` or ``::``, which may be dual-stack) or on the mapping's own address collides; with
        ``host_ip`` None every address does, except loopback ones when ``skip_loopback`` (a mapping
        that does not answer on 127.0.0.1 does not shadow a service bound there).
        """
        for ip, p, state in self.sockets.get(proto, []):
            if p != port or (proto == 'tcp' and state != TCP_LISTEN):
                continue
            addr = ipaddress.ip_address(ip)
            if addr.is_unspecified:
                if addr.version == family or addr.version == 6:
                    return _show(ip, port)
                continue
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if addr.version != family:
                continue
            if host_ip is None and not (skip_loopback and addr.is_loopback) \
                    or host_ip is not None and ipaddress.ip_address(host_ip) == addr:
                return _show(str(addr), port)
        return None

    def ports_in_use(self, proto):
        """Every local port a socket of ``proto`` holds (any state): never handed out as a free port."""
        return set(p for ip, p, state in self.sockets.get(proto, []))


def _show(ip, port):
    return ('[%s]:%d' if ':' in ip else '%s:%d') % (ip, port)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ''


class PortAllocator:
    """Hands out the lowest free port of the range per protocol, never the same twice in a run."""

    def __init__(self, port_range, used):
        self.lo, self.hi = port_range
        self.used = dict((proto, set(ports)) for proto, ports in used.items())

    def take(self, proto, spec):
        used = self.used.setdefault(proto, set())
        for port in range(self.lo, self.hi + 1):
            if port not in used:
                used.add(port)
                return port
        raise PipeworkError('publish: %r: no free host port left in the local port range %d-%d for %s'
                            % (spec, self.lo, self.hi, proto), spec=spec)

    def reserve(self, proto, port):
        self.used.setdefault(proto, set()).add(port)
