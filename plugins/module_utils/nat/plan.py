# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan a nat_portmap run: from what the rules say (have) and what the task asks (want) to the new owned
state, the human-readable changes, and the ONE restore input per family.

Rules of ownership:

* a mapping belongs to its target's handle; a host port another handle holds is an error naming both;
* a host port that a local socket, or a DNAT rule outside the collection's chains (Docker's), holds is an
  error too;
* a free host port (spec without a host port) reuses the port this target already has for that container
  port, so re-runs never move it; else the lowest free port of the local port range.

Pure code over values (nat_model, nat_save, nat_ports): unit tested without a kernel.
"""

from __future__ import annotations

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.model import (
    CHAIN_FORWARD, Mapping, overlaps, own_chains)
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.ports import PortAllocator
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.save import normalize, split_rule
from ansible_collections.netplumb.pipework.plugins.module_utils.nat import render as nat_render


def _want_family(item, req):
    return (req.family,) if req.family is not None else item.families


def _matches_request(m, req, family):
    """Does an existing mapping answer this request (for reuse or removal)?"""
    if m.family != family or m.proto != req.proto or m.host_ip != req.host_ip:
        return False
    if req.host_port is not None:
        return m.host_port == req.host_port
    return m.container_port == req.container_port


class Planner:
    """Computes the new OwnedState. ``have`` is the OwnedState read from the rules."""

    def __init__(self, have, bound, port_range, foreign_dnat):
        self.have = have
        self.bound = bound
        self.port_range = port_range
        self.foreign_dnat = foreign_dnat  # {family: [(chain, proto, host_ip, (lo, hi), line)]}
        self.notes = []     # plan lines about targets that cannot be resolved yet (check mode)
        self.current = list(have.mappings)  # what other targets hold once this run's removals are done

    def plan(self, items, masquerade, state, isolate, run_bridges):
        new = self.have.copy()
        # 0. removals first: a port one target gives up in this run is free for another in the same run
        for item in items:
            if item.state == 'absent':
                new.mappings = self._absent(new.mappings, item)
        self.current = list(new.mappings)
        present = [i for i in items if i.state == 'present' and i.resolved is not None
                   and i.resolved.missing is None]
        wanted = {}
        # 1. explicit host ports and reused free ports; conflicts
        for item in present:
            wanted[item.name] = self._wanted_explicit(item)
        # 2. free ports for the rest, after every explicit port of the run is known
        allocator = self._allocator(wanted)
        for item in present:
            for entry in wanted[item.name]:
                if entry['host_port'] is None:
                    entry['host_port'] = allocator.take(entry['req'].proto, entry['req'].spec)
                    self._check_free(item, entry, new_port=True)
        # 3. the new mapping lists
        for item in items:
            if item.state == 'present':
                if item.resolved is None or item.resolved.missing is not None:
                    if item.resolved is not None:
                        self.notes.append('publish %s for %s once it can be read: %s'
                                          % (', '.join(item.publish) or 'nothing', item.name, item.resolved.missing))
                    continue
                new.mappings = self._present(new.mappings, item, wanted[item.name])
        # 4. masquerade entries
        if state == 'present':
            for entry in masquerade:
                if entry not in new.masquerade:
                    new.masquerade.append(entry)
        else:
            new.masquerade = [e for e in new.masquerade if e not in masquerade]
        # 5. isolation
        if isolate is False:
            new.isolate = {}
        elif isolate or new.isolate:
            bridges = set()
            for fam_bridges in new.isolate.values():
                bridges.update(fam_bridges)
            bridges.update(e.bridge for e in new.masquerade)
            bridges.update(b for b in run_bridges if b)
            families = set(m.family for m in new.mappings) | set(e.family for e in new.masquerade) | {4}
            families |= set(new.isolate)
            new.isolate = dict((f, sorted(bridges)) for f in families)
        return new

    # -- present ---------------------------------------------------------------------------------
    def _wanted_explicit(self, item):
        entries = []
        claimed = set()
        mine = [m for m in self.have.mappings if m.target == item.name]
        explicit_keys = []
        for req in item.requests:
            for family in _want_family(item, req):
                if req.host_port is not None:
                    explicit_keys.append((family, req.proto, req.host_ip, req.host_port))
        for req in item.requests:
            for family in _want_family(item, req):
                address = item.resolved.address(family)
                if address is None:
                    raise PipeworkError('%s: publish %r needs an IPv%d address on %s, which has none'
                                        % (item.label, req.spec, family, item.name), spec=req.spec)
                entry = dict(req=req, family=family, host_port=req.host_port, address=address)
                if req.host_port is None:
                    for m in sorted(mine, key=lambda m: m.host_port):
                        key = m.host_key
                        if key in claimed or not _matches_request(m, req, family):
                            continue
                        if any(overlaps(key, k) for k in explicit_keys):
                            continue
                        entry['host_port'] = m.host_port
                        break
                if entry['host_port'] is not None:
                    key = (family, req.proto, req.host_ip, entry['host_port'])
                    claimed.add(key)
                    self._check_free(item, entry, new_port=not any(m.host_key == key for m in mine))
                entries.append(entry)
        return entries

    def _check_free(self, item, entry, new_port):
        req = entry['req']
        key = (entry['family'], req.proto, req.host_ip, entry['host_port'])
        for other in self.current:
            if other.target != item.name and overlaps(key, other):
                raise PipeworkError(
                    '%s: publish %r for %r: host port %s is already published for %r (%s); remove it there '
                    'first (state: absent) or choose another host port'
                    % (item.label, req.spec, item.name, _show_key(key), other.target, other.describe()),
                    spec=req.spec, owner=other.target)
        for chain, proto, host_ip, (lo, hi), line in self.foreign_dnat.get(entry['family'], []):
            if proto == req.proto and lo <= entry['host_port'] <= hi and (
                    host_ip is None or req.host_ip is None or host_ip == req.host_ip):
                raise PipeworkError('%s: publish %r: host port %s is already forwarded by a rule outside the '
                                    'collection (chain %s: %s)' % (item.label, req.spec, _show_key(key), chain, line),
                                    spec=req.spec)
        if new_port:
            loopback = req.host_ip is None and not (item.localhost and entry['family'] == 4)
            binder = self.bound.binder(req.proto, entry['family'], req.host_ip, entry['host_port'],
                                       skip_loopback=loopback)
            if binder:
                raise PipeworkError('%s: publish %r: host port %s is bound by a local process (socket %s); '
                                    'stop it or choose another host port'
                                    % (item.label, req.spec, _show_key(key), binder), spec=req.spec)

    def _allocator(self, wanted):
        used = {}
        for m in self.current:
            used.setdefault(m.proto, set()).add(m.host_port)
        for entries in wanted.values():
            for entry in entries:
                if entry['host_port'] is not None:
                    used.setdefault(entry['req'].proto, set()).add(entry['host_port'])
        for rules in self.foreign_dnat.values():
            for chain, proto, host_ip, (lo, hi), line in rules:
                if hi - lo < 4096:
                    used.setdefault(proto, set()).update(range(lo, hi + 1))
        for proto in ('tcp', 'udp', 'sctp'):
            used.setdefault(proto, set()).update(self.bound.ports_in_use(proto))
        return PortAllocator(self.port_range, used)

    def _present(self, mappings, item, entries):
        new_mine = []
        for entry in entries:
            req = entry['req']
            address = entry['address']
            new_mine.append(Mapping(item.name, entry['family'], req.proto, req.host_ip, entry['host_port'],
                                    str(address.ip), req.container_port,
                                    localhost=item.localhost or _is_loopback(req.host_ip),
                                    hairpin_src=str(address.network)))
        others = [m for m in mappings if m.target != item.name]
        mine = [m for m in mappings if m.target == item.name]
        if not item.exclusive:
            kept = [m for m in mine if not any(overlaps(m, n) for n in new_mine)]
            new_mine = kept + new_mine
        return others + _dedupe(new_mine)

    # -- absent ----------------------------------------------------------------------------------
    def _absent(self, mappings, item):
        if not item.requests:
            return [m for m in mappings if m.target != item.name]
        out = []
        for m in mappings:
            if m.target == item.name and any(
                    _matches_request(m, req, m.family) and (req.family in (None, m.family))
                    for req in item.requests):
                continue
            out.append(m)
        return out


def _is_loopback(ip):
    return ip is not None and ip.startswith('127.')


def _dedupe(mappings):
    seen = set()
    out = []
    for m in mappings:
        if m.host_key not in seen:
            seen.add(m.host_key)
            out.append(m)
    return out


def _show_key(key):
    family, proto, host_ip, port = key
    if host_ip is None:
        host = '0.0.0.0' if family == 4 else '[::]'
    else:
        host = host_ip if family == 4 else '[%s]' % host_ip
    return '%s:%d/%s' % (host, port, proto)


def mapping_changes(have, new):
    """Human-readable lines, and the UDP host ports whose conntrack entries must go."""
    before = dict((m.host_key, m) for m in have.mappings)
    after = dict((m.host_key, m) for m in new.mappings)
    lines = []
    flush = set()
    for key in sorted(set(before) | set(after), key=lambda k: (k[3], k[1], k[0], k[2] or '')):
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        if b is None:
            lines.append('publish %s' % a.describe())
        elif a is None:
            lines.append('unpublish %s' % b.describe())
        else:
            lines.append('change %s to %s' % (b.describe(), a.describe()))
        if key[1] == 'udp':
            flush.add((key[0], key[3]))
    for e in new.masquerade:
        if e not in have.masquerade:
            lines.append('masquerade %s leaving through any interface but %s' % (e.cidr, e.bridge))
    for e in have.masquerade:
        if e not in new.masquerade:
            lines.append('stop masquerading %s (bridge %s)' % (e.cidr, e.bridge))
    for family in sorted(set(have.isolate) | set(new.isolate)):
        if have.isolate.get(family) != new.isolate.get(family):
            if family in new.isolate:
                lines.append('isolate IPv%d forwarding to traffic of bridges %s' % (
                    family, ', '.join(new.isolate[family]) or '(none)'))
            else:
                lines.append('stop isolating IPv%d forwarding' % family)
    return lines, sorted(flush)


class FamilyRestore:
    """What one family's restore does: its input text (empty: nothing to do) and its change lines."""

    def __init__(self, family, text, changes, rollback):
        self.family = family
        self.text = text
        self.changes = changes
        self.rollback = rollback


def plan_restore(saved, desired, unknown):
    """The ONE ``iptables-restore --noflush`` input that turns ``saved`` into ``desired`` (nat_render).

    Chains whose rules already mean what is wanted are left alone; missing jumps are added once and
    duplicates removed; when the family needs nothing any more, jumps and chains are deleted.
    ``rollback`` puts back what was there before (used when a later step of the run fails).
    """
    family = saved.family
    forward_parent = 'DOCKER-USER' if saved.has_chain('filter', 'DOCKER-USER') else 'FORWARD'
    changes = []
    sections = []
    rollback = []
    existing_jumps = saved.jumps()
    for table, chains in own_chains(family).items():
        body = []
        undo = []
        if desired is not None:
            want = desired[table]
            rewrite = False
            for chain in chains:
                have_rules = [r.normalized() for r in saved.rules_in(table, chain)]
                want_rules = [_normalized(line) for line in want[chain]]
                if not saved.has_chain(table, chain) or have_rules != want_rules:
                    rewrite = True
            if rewrite:
                body.extend(':%s - [0:0]' % chain for chain in chains)
                for chain in chains:
                    body.extend(want[chain])
                for chain in chains:
                    if saved.has_chain(table, chain):
                        undo.append(':%s - [0:0]' % chain)
                        undo.extend(r.line for r in saved.rules_in(table, chain))
            for tbl, parent, own, args, insert in nat_render.jumps(family, forward_parent):
                if tbl != table:
                    continue
                found = [j for j in existing_jumps if j[0] == table and j[2] == own
                         and (j[1] == parent or own == CHAIN_FORWARD and j[1] in ('FORWARD', 'DOCKER-USER'))]
                if not found:
                    body.append(nat_render.jump_line(parent, args, insert))
                    undo.append('-D %s %s' % (parent, args))
                    changes.append('add IPv%d jump %s -> %s' % (family, parent, own))
                for extra in found[1:]:
                    body.append('-D' + extra[3].line[2:])
                    changes.append('remove duplicate IPv%d jump %s -> %s' % (family, extra[1], own))
            created = [c for c in chains if not saved.has_chain(table, c)]
            undo.extend('-X %s' % c for c in created)
        else:
            for tbl, parent, own, rule in existing_jumps:
                if tbl == table:
                    body.append('-D' + rule.line[2:])
                    undo.append(rule.line)
                    changes.append('remove IPv%d jump %s -> %s' % (family, parent, own))
            present = [c for c in chains if saved.has_chain(table, c)]
            for chain in present:
                body.append('-F %s' % chain)
            for chain in present:
                body.append('-X %s' % chain)
                changes.append('delete IPv%d chain %s/%s' % (family, table, chain))
            if present:
                undo[:0] = [':%s - [0:0]' % c for c in present]
                for chain in present:
                    undo.extend(r.line for r in saved.rules_in(table, chain))
        if body:
            sections.append('*%s\n%s\nCOMMIT\n' % (table, '\n'.join(body)))
            if undo:
                rollback.append('*%s\n%s\nCOMMIT\n' % (table, '\n'.join(_undo_order(undo))))
    for line in unknown:
        changes.append('drop IPv%d rule not made by the collection from its chain: %s' % (family, line))
    if sections and not changes:
        changes.append('rewrite IPv%d chains %s' % (family, ', '.join(
            c for t in own_chains(family).values() for c in t)))
    return FamilyRestore(family, ''.join(sections), changes, ''.join(rollback))


def _undo_order(undo):
    """Chain declarations first, deletions of added jumps before chain removals."""
    decl = [u for u in undo if u.startswith(':')]
    dels = [u for u in undo if u.startswith('-D')]
    rest = [u for u in undo if not u.startswith(':') and not u.startswith('-D') and not u.startswith('-X')]
    drops = [u for u in undo if u.startswith('-X')]
    return decl + dels + rest + ['-F %s' % d[3:] for d in drops] + drops


def _normalized(line):
    chain, opts = split_rule(line)
    return normalize(chain, opts)


def forward_policy(saved):
    return saved.policy('filter', 'FORWARD') or 'ACCEPT'
