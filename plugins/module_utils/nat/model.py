# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What nat_portmap owns, as values: port mappings, masquerade entries, isolation; chain names, comments.

The state lives in the kernel's rules only: every rule in the collection's chains carries a comment
(``netplumb/target=NAME``, ``netplumb/masquerade``, ...), so parsing ``iptables-save`` gives these
values back (nat_save), and rendering them gives the rules (nat_render).
"""

from __future__ import annotations

import ipaddress

# Chains the collection owns, per table. The same names are used by iptables and ip6tables.
CHAIN_DNAT = 'NETPLUMB-DNAT'            # nat: jumped from PREROUTING/OUTPUT for local destinations
CHAIN_LOCALHOST = 'NETPLUMB-LOCALHOST'  # nat (IPv4): jumped from OUTPUT for 127.0.0.0/8 (localhost: true)
CHAIN_MASQ = 'NETPLUMB-MASQ'            # nat: jumped from POSTROUTING
CHAIN_FORWARD = 'NETPLUMB-FORWARD'      # filter: jumped from DOCKER-USER when it exists, else FORWARD
CHAIN_INPUT = 'NETPLUMB-INPUT'          # filter (IPv4): the 127.0.0.0/8 guard, jumped from INPUT

COMMENT_PREFIX = 'netplumb/'
COMMENT_JUMP = 'netplumb/jump'
COMMENT_MASQ = 'netplumb/masquerade'
COMMENT_ISOLATE = 'netplumb/isolate'
COMMENT_GUARD = 'netplumb/localhost-guard'
TARGET_PREFIX = 'netplumb/target='

PROTO_NUMBERS = {'tcp': 6, 'udp': 17, 'sctp': 132}
PROTO_NAMES = dict((v, k) for k, v in PROTO_NUMBERS.items())

LOOPBACK4 = ipaddress.ip_network('127.0.0.0/8')


def target_comment(target):
    return TARGET_PREFIX + target


def own_chains(family):
    """{table: [chains]} the collection owns in this family."""
    if family == 4:
        return {'nat': [CHAIN_DNAT, CHAIN_LOCALHOST, CHAIN_MASQ], 'filter': [CHAIN_FORWARD, CHAIN_INPUT]}
    return {'nat': [CHAIN_DNAT, CHAIN_MASQ], 'filter': [CHAIN_FORWARD]}


def is_loopback(ip):
    return ip is not None and ipaddress.ip_address(ip).is_loopback


class Mapping:
    """One published port: host side -> container side, owned by ``target`` (the operator's handle).

    ``host_ip`` None means every local address of ``family``; a loopback ``host_ip`` answers on that
    loopback address only; ``localhost`` (IPv4, ``host_ip`` None) also answers on 127.0.0.1.
    ``hairpin_src`` is the network whose DNATed traffic to this mapping is masqueraded (hairpin).
    """

    __slots__ = ('target', 'family', 'proto', 'host_ip', 'host_port', 'container_ip', 'container_port',
                 'localhost', 'hairpin_src')

    def __init__(self, target, family, proto, host_ip, host_port, container_ip, container_port,
                 localhost=False, hairpin_src=None):
        self.target = target
        self.family = family
        self.proto = proto
        self.host_ip = host_ip
        self.host_port = host_port
        self.container_ip = container_ip
        self.container_port = container_port
        self.localhost = bool(localhost) and family == 4 and host_ip is None
        self.hairpin_src = hairpin_src or ('%s/%d' % (container_ip, 32 if family == 4 else 128))

    @property
    def host_key(self):
        """What must be unique on the host: (family, proto, host address, host port)."""
        return (self.family, self.proto, self.host_ip, self.host_port)

    @property
    def loopback_only(self):
        return is_loopback(self.host_ip)

    @property
    def uses_localnet(self):
        """True when the mapping answers on a loopback address (needs route_localnet and the guard)."""
        return self.localhost or self.loopback_only

    def as_tuple(self):
        return (self.target, self.family, self.proto, self.host_ip, self.host_port, self.container_ip,
                self.container_port, self.localhost, self.hairpin_src)

    def sort_key(self):
        return (self.host_port, self.proto, self.family, self.host_ip or '', self.target)

    def __eq__(self, other):
        return isinstance(other, Mapping) and self.as_tuple() == other.as_tuple()

    def __hash__(self):
        return hash(self.as_tuple())

    def __repr__(self):
        return 'Mapping%r' % (self.as_tuple(),)

    def shown_host_ip(self):
        if self.host_ip is not None:
            return self.host_ip
        return '0.0.0.0' if self.family == 4 else '::'

    def to_result(self):
        """What `docker port` shows, plus who owns it."""
        return {
            'target': self.target,
            'proto': self.proto,
            'host_ip': self.shown_host_ip(),
            'host_port': self.host_port,
            'container_ip': self.container_ip,
            'container_port': self.container_port,
            'localhost': self.localhost or self.loopback_only,
            'family': 'ipv%d' % self.family,
        }

    def describe(self):
        host = self.shown_host_ip()
        if self.family == 6:
            host = '[%s]' % host
        dest = self.container_ip if self.family == 4 else '[%s]' % self.container_ip
        extra = ' +127.0.0.1' if self.localhost else ''
        return '%s:%d/%s -> %s:%d%s (%s)' % (host, self.host_port, self.proto, dest, self.container_port, extra,
                                             self.target)


def overlaps(a, b):
    """Do two mappings claim the same host port? ``a``/``b`` are Mapping or host_key tuples."""
    fa, pa, ia, na = a.host_key if isinstance(a, Mapping) else a
    fb, pb, ib, nb = b.host_key if isinstance(b, Mapping) else b
    if fa != fb or pa != pb or na != nb:
        return False
    return ia is None or ib is None or ia == ib


class MasqEntry:
    """Masquerade of ``cidr`` leaving through any interface but ``bridge``; shared by all targets."""

    __slots__ = ('cidr', 'bridge')

    def __init__(self, cidr, bridge):
        self.cidr = str(ipaddress.ip_network(cidr, strict=False))
        self.bridge = bridge

    @property
    def family(self):
        return ipaddress.ip_network(self.cidr).version

    def as_tuple(self):
        return (self.cidr, self.bridge)

    def __eq__(self, other):
        return isinstance(other, MasqEntry) and self.as_tuple() == other.as_tuple()

    def __hash__(self):
        return hash(self.as_tuple())

    def __repr__(self):
        return 'MasqEntry%r' % (self.as_tuple(),)

    def to_result(self):
        return {'source': self.cidr, 'bridge': self.bridge}


class OwnedState:
    """Everything the collection owns on the host, in both families."""

    def __init__(self, mappings=None, masquerade=None, isolate=None):
        self.mappings = list(mappings or [])
        self.masquerade = list(masquerade or [])
        # {family: sorted bridge names} when isolation is on for that family, else absent.
        self.isolate = dict(isolate or {})

    def copy(self):
        return OwnedState(self.mappings, self.masquerade, dict((k, list(v)) for k, v in self.isolate.items()))

    def of_target(self, target):
        return [m for m in self.mappings if m.target == target]

    def families(self):
        fams = set(m.family for m in self.mappings) | set(e.family for e in self.masquerade)
        fams |= set(self.isolate)
        return fams

    def active(self, family):
        """Does the collection need its chains in this family?"""
        return family in self.families()
