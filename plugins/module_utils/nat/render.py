# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render what the collection owns (nat_model values) as rules, and the ONE iptables-restore input per
family that rewrites the collection's chains.

Rules are written in the form ``iptables-save`` prints them back, so a diff of before/after reads clean;
change detection does not depend on it (nat_save.normalize compares rules by meaning).

Per mapping (comment ``netplumb/target=NAME``):

* nat ``NETPLUMB-DNAT``: ``[-d HOST_IP] -p P --dport HOST_PORT -j DNAT --to-destination C_IP:C_PORT``
  (jumped from PREROUTING for local destinations and from OUTPUT for local, non-loopback ones);
* nat ``NETPLUMB-LOCALHOST`` (IPv4, localhost / loopback host address): the same DNAT for 127.0.0.1,
  jumped from OUTPUT only, and ``-s 127.0.0.0/8 -d C_IP ... -j MASQUERADE`` in ``NETPLUMB-MASQ``;
* nat ``NETPLUMB-MASQ``: hairpin, ``-s HAIRPIN_NET -d C_IP -p P --dport C_PORT --ctstate DNAT -j MASQUERADE``
  (Docker's ``-s ip -d ip`` rule, widened to the container's subnet so neighbours hairpin too);
* filter ``NETPLUMB-FORWARD``: ``--ctstate DNAT --ctproto P --ctreplsrc C_IP --ctreplsrcport C_PORT -j ACCEPT``
  (both directions of the published flows, whatever the FORWARD policy).

Per masquerade entry (``netplumb/masquerade``): ``-s CIDR ! -o BRIDGE -j MASQUERADE``, and in
``NETPLUMB-FORWARD`` the bridge's outbound, reply and bridge-internal (br_netfilter) traffic accepted.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.netplumb.pipework.plugins.module_utils.nat.model import (
    CHAIN_DNAT, CHAIN_FORWARD, CHAIN_INPUT, CHAIN_LOCALHOST, CHAIN_MASQ, COMMENT_GUARD, COMMENT_ISOLATE,
    COMMENT_JUMP, COMMENT_MASQ, PROTO_NUMBERS, own_chains, target_comment)


def _comment(text):
    return '-m comment --comment "%s"' % text


def _host(ip, family):
    return '%s/%d' % (ip, 32 if family == 4 else 128)


def _dest(ip, port, family):
    return ('%s:%d' if family == 4 else '[%s]:%d') % (ip, port)


def _proto(proto, port, flag='--dport'):
    return '-p %s -m %s %s %d' % (proto, proto, flag, port)


def _net(cidr):
    return str(ipaddress.ip_network(cidr, strict=False))


def mapping_rules(m):
    """[(table, chain, rule args)] for one mapping."""
    c = _comment(target_comment(m.target))
    rules = []
    to = '-j DNAT --to-destination %s' % _dest(m.container_ip, m.container_port, m.family)
    if not m.loopback_only:
        where = '-d %s ' % _host(m.host_ip, m.family) if m.host_ip else ''
        rules.append(('nat', CHAIN_DNAT, '%s%s %s %s' % (where, _proto(m.proto, m.host_port), c, to)))
    if m.uses_localnet:
        lo = m.host_ip or '127.0.0.1'
        rules.append(('nat', CHAIN_LOCALHOST, '-d %s %s %s %s' % (_host(lo, 4), _proto(m.proto, m.host_port), c, to)))
    cdst = '-d %s %s' % (_host(m.container_ip, m.family), _proto(m.proto, m.container_port))
    rules.append(('nat', CHAIN_MASQ, '-s %s %s -m conntrack --ctstate DNAT %s -j MASQUERADE'
                  % (_net(m.hairpin_src), cdst, c)))
    if m.uses_localnet:
        rules.append(('nat', CHAIN_MASQ, '-s 127.0.0.0/8 %s %s -j MASQUERADE' % (cdst, c)))
    rules.append(('filter', CHAIN_FORWARD,
                  '-m conntrack --ctstate DNAT --ctproto %d --ctreplsrc %s --ctreplsrcport %d %s -j ACCEPT'
                  % (PROTO_NUMBERS[m.proto], m.container_ip, m.container_port, c)))
    return rules


def masquerade_rules(e):
    c = _comment(COMMENT_MASQ)
    b = e.bridge
    return [
        ('nat', CHAIN_MASQ, '-s %s ! -o %s %s -j MASQUERADE' % (e.cidr, b, c)),
        ('filter', CHAIN_FORWARD, '-s %s -i %s ! -o %s %s -j ACCEPT' % (e.cidr, b, b, c)),
        ('filter', CHAIN_FORWARD, '-d %s ! -i %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED %s -j ACCEPT'
         % (e.cidr, b, b, c)),
        ('filter', CHAIN_FORWARD, '-i %s -o %s %s -j ACCEPT' % (b, b, c)),
    ]


def guard_rules():
    """CVE-2020-8558: with route_localnet on, drop 127.0.0.0/8 arriving from outside (as kube-proxy does)."""
    return [('filter', CHAIN_INPUT, '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate '
             'RELATED,ESTABLISHED,DNAT %s -j DROP' % _comment(COMMENT_GUARD))]


def isolate_rules(bridges):
    c = _comment(COMMENT_ISOLATE)
    rules = []
    for b in bridges:
        rules.append(('filter', CHAIN_FORWARD, '-i %s %s -j RETURN' % (b, c)))
        rules.append(('filter', CHAIN_FORWARD, '-o %s %s -j RETURN' % (b, c)))
    rules.append(('filter', CHAIN_FORWARD, '%s -j DROP' % c))
    return rules


def desired_chains(state, family):
    """{table: {chain: [lines]}} for one family, or None when the family needs no chains at all.

    Lines are ``-A CHAIN args``; duplicates (two mappings to one container port) are rendered once.
    """
    if not state.active(family):
        return None
    chains = own_chains(family)
    out = dict((table, dict((chain, []) for chain in names)) for table, names in chains.items())
    rules = []
    mappings = sorted((m for m in state.mappings if m.family == family), key=lambda m: m.sort_key())
    for m in mappings:
        rules.extend(mapping_rules(m))
    for e in sorted((e for e in state.masquerade if e.family == family), key=lambda e: e.as_tuple()):
        rules.extend(masquerade_rules(e))
    if family == 4 and any(m.uses_localnet for m in mappings):
        rules.extend(guard_rules())
    if family in state.isolate:
        rules.extend(isolate_rules(state.isolate[family]))
    seen = set()
    for table, chain, args in rules:
        line = '-A %s %s' % (chain, args)
        if (table, line) in seen:
            continue
        seen.add((table, line))
        out[table][chain].append(line)
    return out


def jumps(family, forward_parent):
    """[(table, parent chain, own chain, rule args, insert)] the built-in chains need."""
    c = _comment(COMMENT_JUMP)
    if family == 4:
        return [
            ('nat', 'PREROUTING', CHAIN_DNAT, '-m addrtype --dst-type LOCAL %s -j %s' % (c, CHAIN_DNAT), False),
            ('nat', 'OUTPUT', CHAIN_DNAT, '! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL %s -j %s'
             % (c, CHAIN_DNAT), False),
            ('nat', 'OUTPUT', CHAIN_LOCALHOST, '-d 127.0.0.0/8 %s -j %s' % (c, CHAIN_LOCALHOST), False),
            ('nat', 'POSTROUTING', CHAIN_MASQ, '%s -j %s' % (c, CHAIN_MASQ), False),
            ('filter', forward_parent, CHAIN_FORWARD, '%s -j %s' % (c, CHAIN_FORWARD), True),
            ('filter', 'INPUT', CHAIN_INPUT, '%s -j %s' % (c, CHAIN_INPUT), True),
        ]
    return [
        ('nat', 'PREROUTING', CHAIN_DNAT, '-m addrtype --dst-type LOCAL %s -j %s' % (c, CHAIN_DNAT), False),
        ('nat', 'OUTPUT', CHAIN_DNAT, '! -d ::1/128 -m addrtype --dst-type LOCAL %s -j %s' % (c, CHAIN_DNAT), False),
        ('nat', 'POSTROUTING', CHAIN_MASQ, '%s -j %s' % (c, CHAIN_MASQ), False),
        ('filter', forward_parent, CHAIN_FORWARD, '%s -j %s' % (c, CHAIN_FORWARD), True),
    ]


def jump_line(parent, args, insert):
    return ('-I %s 1 %s' if insert else '-A %s %s') % (parent, args)
