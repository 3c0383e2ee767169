# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_bridge_migrate's reads: the host view (uplink, bridge, addresses, routes) and what to warn about.

Netlink is read with pyroute2 (three dumps: links, addresses, routes), using only calls present in 0.7 and
0.9 (Debian 12 ships 0.7); OVS with ovsdb.Vsctl (one JSON read). Addresses and routes become the plain dicts
rollback.py's builders take, and that the snapshot record stores as JSON.
"""

from __future__ import annotations

import os
import shlex
import socket

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import link_from_msg, retry_dump
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import plan as plan_mod

RT_SCOPE_LINK = 253
RT_TABLE_LOCAL = 255
RTPROT_KERNEL = 2
RTPROT_DHCP = 16
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4
IFA_F_SECONDARY = 0x01  # IPv6: a temporary (privacy) address, which the kernel regenerates itself
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
INFINITY_LIFE_TIME = 0xFFFFFFFF
ROUTE_PREF = {0: 'medium', 1: 'high', 3: 'low'}
ROUTE_METRICS = (('RTAX_MTU', 'mtu'), ('RTAX_ADVMSS', 'advmss'), ('RTAX_HOPLIMIT', 'hoplimit'),
                 ('RTAX_INITCWND', 'initcwnd'), ('RTAX_INITRWND', 'initrwnd'), ('RTAX_WINDOW', 'window'),
                 ('RTAX_RTT', 'rtt'), ('RTAX_RTTVAR', 'rttvar'))
DHCP_CLIENTS = ('dhclient', 'dhcpcd', 'udhcpc', 'dhcpcd5', 'pump', 'dhcpcd-bin')


def _attr(msg, name):
    try:
        return msg.get_attr(name)
    except (KeyError, ValueError):
        return None


def _family(msg):
    return 6 if msg['family'] == socket.AF_INET6 else 4


def addr_entry(msg):
    """An address as a dict of what `ip addr add` needs to recreate it."""
    family = _family(msg)
    local = _attr(msg, 'IFA_LOCAL')
    address = _attr(msg, 'IFA_ADDRESS')
    peer = None
    if local and address and local != address:
        peer = address
        address = local
    elif local:
        address = local
    flags = _attr(msg, 'IFA_FLAGS')
    if flags is None:
        flags = msg['flags']
    cache = _attr(msg, 'IFA_CACHEINFO')
    valid = None
    if cache is not None:
        try:
            valid = cache['ifa_valid']
        except (KeyError, TypeError):
            valid = None
    return {
        'family': family,
        'address': address,
        'prefixlen': msg['prefixlen'],
        'peer': peer,
        'broadcast': _attr(msg, 'IFA_BROADCAST') if family == 4 else None,
        'label': _attr(msg, 'IFA_LABEL') if family == 4 else None,
        'scope': msg['scope'],
        'flags': flags,
        'valid_lft': None if valid in (None, INFINITY_LIFE_TIME) else valid,
        'index': msg['index'],
    }


def movable_address(addr):
    """Global addresses the operator manages (not link-local, not IPv6 privacy or failed-DAD ones)."""
    if addr['scope'] >= RT_SCOPE_LINK:
        return False
    if addr['family'] == 6:
        if addr['address'].lower().startswith('fe80:'):
            return False
        if addr['flags'] & (IFA_F_SECONDARY | IFA_F_DADFAILED):
            return False
    return True


def route_entry(msg, names):
    """A route as a dict of what `ip route replace` needs, or (None, reason) for kinds we do not carry."""
    family = _family(msg)
    dst = _attr(msg, 'RTA_DST')
    dst_len = msg['dst_len']
    dst_text = '%s/%d' % (dst, dst_len) if dst else 'default'
    src = _attr(msg, 'RTA_SRC')
    metrics = {}
    nla = _attr(msg, 'RTA_METRICS')
    if nla is not None:
        for attr, word in ROUTE_METRICS:
            value = _attr(nla, attr)
            if value:
                metrics[word] = value
    entry = {
        'family': family,
        'table': _attr(msg, 'RTA_TABLE') or msg['table'],
        'dst': dst_text,
        'src': '%s/%d' % (src, msg['src_len']) if src else None,
        'tos': msg['tos'],
        'gateway': _attr(msg, 'RTA_GATEWAY'),
        'dev': names.get(_attr(msg, 'RTA_OIF')),
        'oif': _attr(msg, 'RTA_OIF'),
        'onlink': bool(msg['flags'] & RTNH_F_ONLINK),
        'nexthops': None,
        'metric': _attr(msg, 'RTA_PRIORITY') or 0,
        'proto': msg['proto'],
        'scope': msg['scope'],
        'type': msg['type'],
        'prefsrc': _attr(msg, 'RTA_PREFSRC'),
        'pref': ROUTE_PREF.get(_attr(msg, 'RTA_PREF')) if family == 6 and _attr(msg, 'RTA_PREF') is not None else None,
        'metrics': metrics,
    }
    multipath = _attr(msg, 'RTA_MULTIPATH')
    if multipath:
        entry['nexthops'] = [{'gateway': _attr(nh, 'RTA_GATEWAY'), 'dev': names.get(nh['oif']), 'oif': nh['oif'],
                              'weight': nh['hops'] + 1, 'onlink': bool(nh['flags'] & RTNH_F_ONLINK)}
                             for nh in multipath]
        entry['dev'] = None
    unsupported = None
    if _attr(msg, 'RTA_NH_ID'):
        unsupported = 'it uses a nexthop object (nhid %s); move that nexthop by hand' % _attr(msg, 'RTA_NH_ID')
    elif _attr(msg, 'RTA_VIA'):
        unsupported = 'its gateway is of another address family (via)'
    return entry, unsupported


def _uses(entry, index):
    if entry['nexthops']:
        return any(nh['oif'] == index for nh in entry['nexthops'])
    return entry['oif'] == index


def _routable(entry):
    return (entry['table'] != RT_TABLE_LOCAL and entry['proto'] != RTPROT_KERNEL and entry['type'] == RTN_UNICAST
            and not (entry['family'] == 6 and entry['dst'].lower().startswith('fe80:')))


def _clean(entry):
    """Drop the ifindex keys: the record must make sense to a process that only knows names."""
    out = dict(entry)
    out.pop('oif', None)
    out.pop('index', None)
    if out.get('nexthops'):
        out['nexthops'] = [dict((k, v) for k, v in nh.items() if k != 'oif') for nh in out['nexthops']]
    return out


def _stp_delay(bridge):
    """Seconds a Linux bridge port with STP on needs before it forwards (0 when STP is off)."""
    try:
        with open('/sys/class/net/%s/bridge/stp_state' % bridge) as handle:
            if handle.read().strip() == '0':
                return 0
        with open('/sys/class/net/%s/bridge/forward_delay' % bridge) as handle:
            return int(handle.read().strip()) // 100 * 2
    except (IOError, OSError, ValueError):
        return 0


def read_view(ipr, uplink, bridge, requested_type, ovs_state, ovs_error=None, state='present'):
    """Read links, addresses and routes (three netlink dumps) into a host view for the planner.

    ``ovs_state`` is an ovsdb.OvsState or None (no Open vSwitch); ``ovs_error`` says why it is None.
    Returns (view, skipped) where ``skipped`` lists (route description, reason) for routes through the uplink
    that the module does not carry over.
    """
    links = retry_dump(lambda: [link_from_msg(m) for m in ipr.get_links()])
    by_name = dict((link['name'], link) for link in links)
    names = dict((link['index'], link['name']) for link in links)
    up = by_name.get(uplink)
    if up is None:
        raise PipeworkError('uplink: there is no interface named %r on this host' % uplink)
    if up['kind'] in ('bridge', 'openvswitch') or (ovs_state is not None and uplink in ovs_state.bridges):
        raise PipeworkError('uplink: %r is itself a bridge; name the NIC that carries the host\'s traffic' % uplink)

    in_ovs = ovs_state is not None and bridge in ovs_state.bridges
    link = by_name.get(bridge)
    try:
        bridge_type, exists = plan_mod.resolve_bridge_type(requested_type, bridge, link['kind'] if link else None,
                                                           link is not None, in_ovs)
    except PipeworkError:
        if state != 'absent' or link is not None:
            raise
        # Nothing to undo for a bridge that does not exist, whatever its name.
        bridge_type, exists = ('ovs' if requested_type == 'ovs' else 'linux'), False
    if bridge_type == 'ovs' and ovs_state is None and state == 'present':
        raise PipeworkError('bridge: %r needs Open vSwitch, which is not usable here: %s'
                            % (bridge, ovs_error or 'ovs-vsctl is not installed'))
    br = None
    if exists:
        if link is None:
            raise PipeworkError('bridge: Open vSwitch bridge %r has no network device (is ovs-vswitchd running?)'
                                % bridge)
        br = {'name': bridge, 'index': link['index'], 'kind': bridge_type, 'mac': link['mac'], 'mtu': link['mtu'],
              'up': link['up'],
              'datapath_type': ovs_state.bridges[bridge]['datapath_type'] if bridge_type == 'ovs' else None,
              'stp_delay': _stp_delay(bridge) if bridge_type == 'linux' else 0}

    # Is the uplink a port of the bridge, or of something else?
    ovs_port_bridge = None
    if ovs_state is not None:
        port = ovs_state.port_of_interface(uplink)
        if port is not None:
            ovs_port_bridge = ovs_state.ports[port]['bridge']
    master = names.get(up['master']) if up['master'] else None
    if bridge_type == 'ovs':
        enslaved = ovs_port_bridge == bridge
    else:
        enslaved = br is not None and up['master'] == br['index']
    other = None
    if not enslaved:
        if ovs_port_bridge:
            other = 'Open vSwitch bridge %s' % ovs_port_bridge
        elif master:
            other = '%s (%s)' % (master, by_name.get(master, {}).get('kind') or 'device')
    if other and state == 'present':
        raise PipeworkError('uplink: %s is already a port of %s; release it first' % (uplink, other))

    addrs = retry_dump(lambda: [addr_entry(m) for m in ipr.get_addr()])
    routes = []
    skipped = []
    for msg in retry_dump(lambda: list(ipr.get_routes(family=socket.AF_INET)) + list(ipr.get_routes(family=socket.AF_INET6))):
        entry, unsupported = route_entry(msg, names)
        if not _routable(entry):
            continue
        if unsupported:
            if _uses(entry, up['index']):
                skipped.append((plan_mod.describe_route(entry), unsupported))
            continue
        routes.append(entry)

    view = {
        'uplink': {'name': uplink, 'index': up['index'], 'mac': up['mac'], 'mtu': up['mtu'], 'up': up['up'],
                   'master': master},
        'bridge_name': bridge,
        'bridge_type': bridge_type,
        'bridge': br,
        'enslaved': enslaved,
        'uplink_addresses': [_clean(a) for a in addrs if a['index'] == up['index'] and movable_address(a)],
        'bridge_addresses': [_clean(a) for a in addrs if br and a['index'] == br['index'] and movable_address(a)],
        'uplink_routes': [_clean(r) for r in routes if _uses(r, up['index'])],
        'bridge_routes': [_clean(r) for r in routes if br and _uses(r, br['index'])],
    }
    return view, skipped


# ---- warnings: what the module cannot carry over safely ----------------------------------------------

def dynamic_warnings(view):
    out = []
    uplink, bridge = view['uplink']['name'], view['bridge_name']
    for addr in view['uplink_addresses']:
        if addr.get('valid_lft') is not None:
            out.append('address %s on %s has a lifetime (%d s left): a DHCP or SLAAC client manages it and will renew '
                       'it on %s, not on %s. It moves to %s as a permanent address; point that client at %s'
                       % (plan_mod.cidr(addr), uplink, addr['valid_lft'], uplink, bridge, bridge, bridge))
    for route in view['uplink_routes']:
        if route.get('proto') == RTPROT_DHCP:
            out.append('route %s came from DHCP (proto dhcp): the client will re-add it on %s; point it at %s'
                       % (plan_mod.describe_route(route), uplink, bridge))
    return out


def dhcp_client_warnings(uplink, bridge, proc='/proc'):
    """DHCP clients in this network namespace whose command line names the uplink."""
    out = []
    try:
        mine = os.stat(os.path.join(proc, 'self/ns/net')).st_ino
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, 'cmdline'), 'rb') as handle:
                argv = [a.decode('utf-8', 'replace') for a in handle.read().split(b'\0') if a]
            if not argv or os.path.basename(argv[0]) not in DHCP_CLIENTS:
                continue
            if os.stat(os.path.join(proc, pid, 'ns/net')).st_ino != mine:
                continue
        except OSError:
            continue
        if uplink in argv[1:] or any(a.endswith('.' + uplink) or a.endswith('-' + uplink + '.pid')
                                     or a.endswith('.' + uplink + '.pid') for a in argv[1:]):
            out.append('a DHCP client runs for %s (%s, pid %s): when it renews it will put the address back on %s; '
                       'reconfigure it for %s' % (uplink, os.path.basename(argv[0]), pid, uplink, bridge))
    return out


def rule_warnings(ipr, uplink, bridge):
    """`ip rule`s that name the uplink (iif/oif): after the migration traffic comes and goes on the bridge."""
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            rules = ipr.get_rules(family=family)
        except Exception:  # pylint: disable=broad-except
            continue  # an old pyroute2 without rule dumps: nothing to warn about, nothing broken
        for rule in rules:
            iif, oif = _attr(rule, 'FRA_IIFNAME') or _attr(rule, 'FRA_IFNAME'), _attr(rule, 'FRA_OIFNAME')
            if uplink in (iif, oif):
                words = ['pref %s' % (_attr(rule, 'FRA_PRIORITY') or 0)]
                if iif:
                    words.append('iif %s' % iif)
                if oif:
                    words.append('oif %s' % oif)
                table = _attr(rule, 'FRA_TABLE') or rule['table']
                words.append('lookup %s' % plan_mod.TABLE_NAMES.get(table, table))
                out.append('ip %srule "%s" names %s; after the migration that traffic uses %s: change the rule'
                           % ('-6 ' if family == socket.AF_INET6 else '', ' '.join(words), uplink, bridge))
    return out


def _iface_matches(pattern, name):
    if pattern.endswith('+'):
        return name.startswith(pattern[:-1])
    return pattern == name


def iptables_warnings(save_output, tool, uplink, bridge):
    """Rules in ``iptables-save`` output whose -i/-o names the uplink (and not the bridge as well)."""
    hits = []
    for line in save_output.splitlines():
        if not line.startswith('-A '):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        for i, word in enumerate(words[:-1]):
            if word in ('-i', '-o', '--in-interface', '--out-interface'):
                pattern = words[i + 1]
                if _iface_matches(pattern, uplink) and not _iface_matches(pattern, bridge):
                    hits.append(line)
                    break
    if not hits:
        return []
    return ['%s: %d rule(s) name %s with -i/-o, for example "%s"; after the migration the host\'s traffic '
            'enters and leaves through %s' % (tool, len(hits), uplink, hits[0], bridge)]


def nft_warnings(ruleset, uplink, bridge):
    """Rules in ``nft -j list ruleset`` output that match iifname/oifname (or iif/oif) on the uplink."""
    count = 0
    for item in (ruleset or {}).get('nftables', []):
        rule = item.get('rule') if isinstance(item, dict) else None
        if rule and _nft_names(rule.get('expr'), uplink):
            count += 1
    if not count:
        return []
    return ['nftables: %d rule(s) match iifname/oifname %s; after the migration the host\'s traffic enters and '
            'leaves through %s' % (count, uplink, bridge)]


def _nft_names(expr, uplink):
    if isinstance(expr, list):
        return any(_nft_names(e, uplink) for e in expr)
    if not isinstance(expr, dict):
        return False
    match = expr.get('match')
    if isinstance(match, dict):
        left = match.get('left')
        if isinstance(left, dict) and isinstance(left.get('meta'), dict) \
                and left['meta'].get('key') in ('iifname', 'oifname', 'iif', 'oif'):
            right = match.get('right')
            values = right.get('set') if isinstance(right, dict) else [right]
            if isinstance(values, list) and uplink in values:
                return True
    return any(_nft_names(v, uplink) for v in expr.values() if isinstance(v, (list, dict)))
