# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read ``iptables-save`` / ``ip6tables-save`` output: tables, chains, rules; what the collection owns.

Structured parsing, no scraping: each ``-A CHAIN ...`` line is split like a shell word list and turned
into (negated, option, values) triples. ``normalize`` gives a rule's meaning independent of how the
tool prints it (option order, ``-m tcp`` implied by ``-p tcp``, ``/32`` or not, protocol names or numbers),
so a rewrite is planned only when the meaning differs.
"""

from __future__ import annotations

import ipaddress
import shlex

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.model import (
    CHAIN_DNAT, CHAIN_FORWARD, CHAIN_INPUT, CHAIN_LOCALHOST, CHAIN_MASQ, COMMENT_ISOLATE, COMMENT_JUMP, COMMENT_MASQ,
    COMMENT_PREFIX, PROTO_NAMES, PROTO_NUMBERS, TARGET_PREFIX, LOOPBACK4, Mapping, MasqEntry, own_chains)

_ADDRESS_OPTIONS = ('-s', '-d', '--ctorigsrc', '--ctorigdst', '--ctreplsrc', '--ctrepldst')
_LIST_OPTIONS = ('--ctstate', '--state')


class Rule:
    """One ``-A`` line: its chain, its option triples and the line itself."""

    __slots__ = ('table', 'chain', 'opts', 'line')

    def __init__(self, table, chain, opts, line):
        self.table = table
        self.chain = chain
        self.opts = opts
        self.line = line

    def get(self, name, default=None):
        """The value of an option (values joined by spaces); ``default`` if absent."""
        for neg, opt, values in self.opts:
            if opt == name:
                return ' '.join(values)
        return default

    def negated(self, name):
        return any(neg for neg, opt, values in self.opts if opt == name)

    @property
    def comment(self):
        return self.get('--comment')

    @property
    def jump(self):
        return self.get('-j')

    def normalized(self):
        return normalize(self.chain, self.opts)


def split_rule(line):
    """'-A CHAIN args...' -> (chain, [(negated, option, [values])])."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise PipeworkError('cannot parse iptables-save line %r: %s' % (line, exc))
    if len(words) < 2 or words[0] != '-A':
        raise PipeworkError('unexpected iptables-save line %r' % line)
    chain = words[1]
    opts = []
    neg = False
    current = None
    for word in words[2:]:
        if word == '!':
            neg = True
            continue
        if word.startswith('-') and len(word) > 1 and not _is_number(word):
            current = [neg, word, []]
            opts.append(current)
            neg = False
            continue
        if current is None:
            raise PipeworkError('unexpected value %r in iptables-save line %r' % (word, line))
        current[2].append(word)
    return chain, [(o[0], o[1], o[2]) for o in opts]


def _is_number(word):
    try:
        int(word)
        return True
    except ValueError:
        return False


def _norm_address(value):
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return value


def _norm_proto(value):
    low = value.lower()
    if low in PROTO_NUMBERS:
        return str(PROTO_NUMBERS[low])
    return low


def normalize(chain, opts):
    """A rule's meaning as a hashable value."""
    items = []
    for neg, opt, values in opts:
        if opt in ('-m', '--match'):
            continue  # implied by the options that follow it
        value = ' '.join(values)
        if opt in _ADDRESS_OPTIONS:
            value = _norm_address(value)
        elif opt in ('-p', '--protocol', '--ctproto'):
            value = _norm_proto(value)
        elif opt in _LIST_OPTIONS:
            value = ','.join(sorted(value.split(',')))
        items.append((bool(neg), opt, value))
    return (chain, tuple(sorted(items)))


class SavedTables:
    """Parsed output of one ``iptables-save`` run (one family)."""

    def __init__(self, text, family):
        self.family = family
        self.chains = {}   # {table: {chain: policy}}
        self.rules = {}    # {table: [Rule]}
        table = None
        for raw in (text or '').splitlines():
            line = raw.strip()
            if not line or line.startswith('#'):
                continue
            if line.startswith('*'):
                table = line[1:]
                self.chains.setdefault(table, {})
                self.rules.setdefault(table, [])
            elif line == 'COMMIT':
                table = None
            elif line.startswith(':') and table:
                parts = line[1:].split()
                self.chains[table][parts[0]] = parts[1] if len(parts) > 1 else '-'
            elif line.startswith('[') and table:
                # iptables-save -c: "[pkts:bytes] -A ..."; drop the counters
                self._add(table, line.split(']', 1)[1].strip())
            elif line.startswith('-A') and table:
                self._add(table, line)

    def _add(self, table, line):
        chain, opts = split_rule(line)
        self.rules[table].append(Rule(table, chain, opts, line))

    def has_chain(self, table, chain):
        return chain in self.chains.get(table, {})

    def policy(self, table, chain):
        return self.chains.get(table, {}).get(chain)

    def rules_in(self, table, chain):
        return [r for r in self.rules.get(table, []) if r.chain == chain]

    def jumps(self):
        """Rules outside the collection's chains that carry the jump comment: [(table, parent, target, Rule)]."""
        found = []
        for table, owned in own_chains(self.family).items():
            for rule in self.rules.get(table, []):
                if rule.chain not in owned and rule.comment == COMMENT_JUMP:
                    found.append((table, rule.chain, rule.jump, rule))
        return found

    def foreign_dnat(self):
        """DNAT rules outside the collection's chains (Docker's DOCKER chain, hand-written ones).

        [(chain, proto, host_ip or None, port range (lo, hi), line)].
        """
        owned = own_chains(self.family)['nat']
        found = []
        for rule in self.rules.get('nat', []):
            if rule.chain in owned or rule.jump != 'DNAT':
                continue
            proto = rule.get('-p')
            dport = rule.get('--dport') or rule.get('--destination-port')
            if not proto or not dport or rule.negated('--dport'):
                continue
            proto = PROTO_NAMES.get(int(proto), proto) if _is_number(proto) else proto.lower()
            try:
                lo, _sep, hi = dport.partition(':')
                ports = (int(lo), int(hi or lo))
            except ValueError:
                continue
            dst = rule.get('-d')
            host_ip = None
            if dst and not rule.negated('-d'):
                net = ipaddress.ip_network(dst, strict=False)
                if net.num_addresses == 1:
                    host_ip = str(net.network_address)
            found.append((rule.chain, proto, host_ip, ports, rule.line))
        return found

    def dump_own(self):
        """The collection's chains as text (for diff), in a fixed order."""
        lines = []
        for table, names in own_chains(self.family).items():
            for chain in names:
                lines.extend(r.line for r in self.rules_in(table, chain))
        for table, parent, target, rule in self.jumps():
            lines.append(rule.line)
        return lines


def _split_dest(value, family):
    """'10.0.0.2:80' / '[fd00::2]:80' -> (ip, port)."""
    if family == 6:
        if not value.startswith('[') or ']:' not in value:
            raise ValueError(value)
        ip, port = value[1:].split(']:', 1)
    else:
        ip, port = value.rsplit(':', 1)
    return str(ipaddress.ip_address(ip)), int(port)


def _host_ip(rule):
    dst = rule.get('-d')
    if dst is None:
        return None
    net = ipaddress.ip_network(dst, strict=False)
    if net.num_addresses != 1:
        raise ValueError(dst)
    return str(net.network_address)


def _dnat_entry(rule, family):
    comment = rule.comment or ''
    if not comment.startswith(TARGET_PREFIX) or rule.jump != 'DNAT' or rule.negated('-d'):
        raise ValueError(rule.line)
    proto = rule.get('-p')
    proto = PROTO_NAMES.get(int(proto), proto) if _is_number(proto or '') else (proto or '').lower()
    if proto not in PROTO_NUMBERS:
        raise ValueError(rule.line)
    cip, cport = _split_dest(rule.get('--to-destination', ''), family)
    return dict(target=comment[len(TARGET_PREFIX):], family=family, proto=proto, host_ip=_host_ip(rule),
                host_port=int(rule.get('--dport')), container_ip=cip, container_port=cport)


def owned_state(saved):
    """(mappings, masquerade entries, isolate bridges or None, unknown rules) owned in one family.

    ``unknown`` lists rules inside the collection's chains that are not the collection's own
    (hand edits): a run rewrites the chains without them, and says so.
    """
    family = saved.family
    unknown = []
    entries = []
    for rule in saved.rules_in('nat', CHAIN_DNAT):
        try:
            entries.append(_dnat_entry(rule, family))
        except (ValueError, TypeError):
            unknown.append(rule.line)
    loopback = []
    if family == 4:
        for rule in saved.rules_in('nat', CHAIN_LOCALHOST):
            try:
                entry = _dnat_entry(rule, family)
                if entry['host_ip'] is None or ipaddress.ip_address(entry['host_ip']) not in LOOPBACK4:
                    raise ValueError(rule.line)
                loopback.append(entry)
            except (ValueError, TypeError):
                unknown.append(rule.line)

    hairpin = {}
    masquerade = []
    for rule in saved.rules_in('nat', CHAIN_MASQ):
        comment = rule.comment or ''
        if rule.jump != 'MASQUERADE' or not comment.startswith(COMMENT_PREFIX):
            unknown.append(rule.line)
            continue
        if comment == COMMENT_MASQ and rule.get('-s') and rule.negated('-o'):
            masquerade.append(MasqEntry(rule.get('-s'), rule.get('-o')))
        elif comment.startswith(TARGET_PREFIX) and rule.get('-s') and rule.get('-d'):
            if rule.get('--ctstate') == 'DNAT':
                proto = rule.get('-p') or ''
                proto = PROTO_NAMES.get(int(proto), proto) if _is_number(proto) else proto.lower()
                key = (comment[len(TARGET_PREFIX):], proto, str(ipaddress.ip_network(rule.get('-d'), strict=False)
                                                                .network_address), int(rule.get('--dport') or 0))
                hairpin[key] = str(ipaddress.ip_network(rule.get('-s'), strict=False))
        else:
            unknown.append(rule.line)

    isolate = None
    for rule in saved.rules_in('filter', CHAIN_FORWARD):
        comment = rule.comment or ''
        if not comment.startswith(COMMENT_PREFIX):
            unknown.append(rule.line)
        elif comment == COMMENT_ISOLATE:
            isolate = isolate if isolate is not None else []
            bridge = rule.get('-i') or rule.get('-o')
            if rule.jump == 'RETURN' and bridge and bridge not in isolate:
                isolate.append(bridge)
    if family == 4:
        for rule in saved.rules_in('filter', CHAIN_INPUT):
            if not (rule.comment or '').startswith(COMMENT_PREFIX):
                unknown.append(rule.line)

    mappings = []
    used_loopback = set()
    for e in entries:
        localhost = False
        for i, lo in enumerate(loopback):
            if i not in used_loopback and e['host_ip'] is None and lo['host_ip'] == '127.0.0.1' and all(
                    lo[k] == e[k] for k in ('target', 'proto', 'host_port', 'container_ip', 'container_port')):
                localhost = True
                used_loopback.add(i)
                break
        mappings.append(_mapping(e, localhost, hairpin))
    for i, lo in enumerate(loopback):
        if i not in used_loopback:
            mappings.append(_mapping(lo, False, hairpin))
    return mappings, masquerade, (sorted(isolate) if isolate is not None else None), unknown


def _mapping(entry, localhost, hairpin):
    key = (entry['target'], entry['proto'], entry['container_ip'], entry['container_port'])
    return Mapping(localhost=localhost, hairpin_src=hairpin.get(key), **entry)
