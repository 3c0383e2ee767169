# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker ``-p`` / ``--publish`` specs, parsed and checked before anything changes.

Formats (as ``docker run -p`` takes them), each with an optional ``/tcp``, ``/udp`` or ``/sctp``::

    ip:hostPort:containerPort     192.168.1.10:8080:80
    ip::containerPort             192.168.1.10::80      (a free host port on that address)
    hostPort:containerPort        8080:80               (all local addresses)
    containerPort                 80                    (a free host port, like -P)
    ranges                        8000-8002:80-82       (port by port; the lengths must match)
    IPv6 host addresses           [2001:db8::1]:8080:80, [::]:8080:80

Every error names the spec as written. Pure code: unit and property tested.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

PROTOCOLS = ('tcp', 'udp', 'sctp')
_PORT_RANGE = re.compile(r'^([0-9]+)(?:-([0-9]+))?$')


class PortRequest:
    """One container port to publish: what one DNAT rule will carry.

    ``host_ip`` is None for every local address of ``family`` (None: the target's families);
    ``host_port`` is None for "pick a free one".
    """

    __slots__ = ('spec', 'proto', 'family', 'host_ip', 'host_port', 'container_port')

    def __init__(self, spec, proto, family, host_ip, host_port, container_port):
        self.spec = spec
        self.proto = proto
        self.family = family
        self.host_ip = host_ip
        self.host_port = host_port
        self.container_port = container_port

    def as_tuple(self):
        return (self.proto, self.family, self.host_ip, self.host_port, self.container_port)

    def __eq__(self, other):
        return isinstance(other, PortRequest) and self.as_tuple() == other.as_tuple()

    def __hash__(self):
        return hash(self.as_tuple())

    def __repr__(self):
        return 'PortRequest(%r, %r)' % (self.spec, self.as_tuple())


def _fail(spec, why):
    raise PipeworkError('publish: %r is not a valid port spec: %s' % (spec, why), spec=spec)


def _port_range(spec, text, what):
    """'80' -> (80, 80); '8000-8002' -> (8000, 8002); every port 1-65535, start <= end."""
    match = _PORT_RANGE.match(text)
    if not match:
        _fail(spec, '%s %r is not a port number or a range like 8000-8002' % (what, text))
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) is not None else start
    for port in (start, end):
        if not 1 <= port <= 65535:
            _fail(spec, '%s %d is out of range (1-65535)' % (what, port))
    if end < start:
        _fail(spec, '%s range %r ends before it starts' % (what, text))
    return start, end


def _host_ip(spec, text):
    """The host address: '' (all), an IPv4 address, or an IPv6 address in brackets."""
    if text.startswith('['):
        if not text.endswith(']'):
            _fail(spec, 'IPv6 host address %r lacks its closing "]"' % text)
        inner = text[1:-1]
        try:
            addr = ipaddress.IPv6Address(inner)
        except ValueError:
            _fail(spec, '%r is not an IPv6 address' % inner)
        return addr
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        _fail(spec, 'host address %r is not an IPv4 address (write IPv6 addresses in brackets: [2001:db8::1])'
              % text)


def _split(spec, body):
    """Split off the host address (which may be a bracketed IPv6 address) from 'ip:host:container'."""
    if body.startswith('['):
        close = body.find(']')
        if close < 0:
            _fail(spec, 'IPv6 host address lacks its closing "]"')
        ip_text = body[:close + 1]
        rest = body[close + 1:]
        if not rest.startswith(':'):
            _fail(spec, 'expected ":" after the host address %s' % ip_text)
        parts = rest[1:].split(':')
        if len(parts) != 2:
            _fail(spec, 'expected [ip]:hostPort:containerPort or [ip]::containerPort')
        return ip_text, parts[0], parts[1]
    parts = body.split(':')
    if len(parts) == 1:
        return None, None, parts[0]
    if len(parts) == 2:
        if parts[0] == '':
            _fail(spec, 'empty host port (write %s alone for a free host port)' % parts[1])
        return None, parts[0], parts[1]
    if len(parts) == 3:
        if parts[0] == '':
            _fail(spec, 'empty host address (drop it, or give 0.0.0.0)')
        return parts[0], parts[1], parts[2]
    _fail(spec, 'too many ":" (write IPv6 host addresses in brackets: [2001:db8::1]:8080:80)')


def parse_publish(spec):
    """One ``-p`` spec -> a list of PortRequest, one per container port."""
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        _fail(spec, 'expected a string such as "8080:80/tcp"')
    text = str(spec).strip()
    if not text:
        _fail(spec, 'it is empty')
    body, slash, proto = text.partition('/')
    if slash:
        if proto.lower() not in PROTOCOLS:
            _fail(spec, 'unknown protocol %r (use tcp, udp or sctp)' % proto)
        proto = proto.lower()
    else:
        proto = 'tcp'
    ip_text, host_text, container_text = _split(spec, body)

    family = None
    host_ip = None
    if ip_text is not None:
        addr = _host_ip(spec, ip_text)
        family = addr.version
        if addr.is_multicast:
            _fail(spec, 'host address %s is a multicast address' % addr)
        if not addr.is_unspecified:
            host_ip = str(addr)
            if addr.version == 6 and addr.is_loopback:
                _fail(spec, 'IPv6 loopback (::1) cannot be forwarded to a container (the kernel has no '
                            'route_localnet for IPv6)')

    c_start, c_end = _port_range(spec, container_text, 'container port')
    count = c_end - c_start + 1
    if host_text in (None, ''):
        host_ports = [None] * count
    else:
        h_start, h_end = _port_range(spec, host_text, 'host port')
        if h_end - h_start + 1 != count:
            _fail(spec, 'host range %s has %d ports but container range %s has %d'
                  % (host_text, h_end - h_start + 1, container_text, count))
        host_ports = list(range(h_start, h_end + 1))
    return [PortRequest(text, proto, family, host_ip, host_ports[i], c_start + i) for i in range(count)]


def parse_publish_list(specs):
    """Many specs; two that would publish the same host port (same protocol and address) are an error."""
    requests = []
    seen = {}
    for spec in specs or []:
        for req in parse_publish(spec):
            if req.host_port is not None:
                key = (req.proto, req.family, req.host_ip, req.host_port)
                for other_key, other_spec in seen.items():
                    if _same_host_port(key, other_key):
                        raise PipeworkError('publish: %r and %r both publish host port %d/%s'
                                            % (other_spec, req.spec, req.host_port, req.proto), spec=req.spec)
                seen[key] = req.spec
            requests.append(req)
    return requests


def _same_host_port(a, b):
    proto_a, family_a, ip_a, port_a = a
    proto_b, family_b, ip_b, port_b = b
    if proto_a != proto_b or port_a != port_b:
        return False
    if family_a is not None and family_b is not None and family_a != family_b:
        return False
    return ip_a is None or ip_b is None or ip_a == ip_b
