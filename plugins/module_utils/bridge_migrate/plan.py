# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_bridge_migrate's planning: pure functions from a host view (plain dicts) to a list of actions.

A host view (built by bridge_migrate_snapshot.read_view) holds the uplink and the bridge (links), the
uplink's global addresses and the routes through it that can move, the bridge's addresses and routes, and
whether the uplink is a port of the bridge. Addresses and routes are the dicts rollback.py's argument-list
builders take, so one description of a route serves the change, the snapshot and the revert.

The order of the actions is the point of the module: the bridge is ready (MAC, MTU, up) before anything
moves; the addresses are added to the bridge while they are still on the uplink; the uplink is enslaved;
each route is replaced by its bridge twin (``ip route replace``: same table, destination and metric, so
there is never a moment without a default route); only then are the uplink's addresses removed. Every
action is planned from the current state, so a run that was killed half-way is completed by the next one.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import revert as rollback

TABLE_NAMES = {253: 'default', 254: 'main', 255: 'local'}


# ---- identities and descriptions ----------------------------------------------------------------------

def cidr(addr):
    return '%s/%d' % (addr['address'], addr['prefixlen'])


def addr_key(addr):
    return (addr['family'], ipaddress.ip_address(addr['address']), addr['prefixlen'])


def route_identity(route, rename=None):
    """What makes two routes the same route on the same device(s) (``rename`` maps device names)."""
    rename = rename or {}
    if route.get('nexthops'):
        hops = tuple(sorted((nh.get('gateway') or '', rename.get(nh['dev'], nh['dev'])) for nh in route['nexthops']))
    else:
        hops = ((route.get('gateway') or '', rename.get(route['dev'], route['dev'])),)
    return (route['family'], route.get('table', 254), route['dst'], route.get('src') or '', route.get('tos') or 0,
            route.get('metric') or 0, hops)


def describe_route(route, rename=None):
    """``default via 192.168.1.1 dev br0 metric 50``: the words `ip route` prints."""
    rename = rename or {}
    parts = [route['dst']]
    if route.get('src'):
        parts += ['from', route['src']]
    if route.get('nexthops'):
        for nh in route['nexthops']:
            parts.append('nexthop')
            if nh.get('gateway'):
                parts += ['via', nh['gateway']]
            parts += ['dev', rename.get(nh['dev'], nh['dev'])]
            if nh.get('weight', 1) != 1:
                parts += ['weight', str(nh['weight'])]
    else:
        if route.get('gateway'):
            parts += ['via', route['gateway']]
        parts += ['dev', rename.get(route['dev'], route['dev'])]
    table = route.get('table', 254)
    if table != 254:
        parts += ['table', TABLE_NAMES.get(table, str(table))]
    if route.get('metric'):
        parts += ['metric', str(route['metric'])]
    if route.get('prefsrc'):
        parts += ['src', route['prefsrc']]
    return ' '.join(parts)


def describe(action, uplink, bridge):
    op = action['op']
    if op == 'create_bridge':
        return 'create %s bridge %s%s with MAC %s and MTU %d' % (
            'Open vSwitch' if action['type'] == 'ovs' else 'Linux', bridge,
            ' (datapath %s)' % action['datapath_type'] if action['type'] == 'ovs' else '', action['mac'], action['mtu'])
    if op == 'set_bridge':
        what = []
        if action.get('mac'):
            what.append('MAC %s' % action['mac'])
        if action.get('mtu'):
            what.append('MTU %d' % action['mtu'])
        return 'give bridge %s the uplink\'s %s' % (bridge, ' and '.join(what))
    if op == 'bridge_up':
        return 'bring bridge %s up' % bridge
    if op == 'uplink_up':
        return 'bring uplink %s up' % uplink
    if op == 'add_address':
        return 'add address %s to %s' % (cidr(action['addr']), action['dev'])
    if op == 'del_address':
        return 'remove address %s from %s' % (cidr(action['addr']), action['dev'])
    if op == 'enslave':
        return 'make %s a port of bridge %s' % (uplink, bridge)
    if op == 'release':
        return 'release %s from bridge %s' % (uplink, bridge)
    if op == 'move_route':
        if action['direction'] == 'to_bridge':
            return 'move route %s to %s' % (describe_route(action['route']), bridge)
        return 'move route %s back to %s' % (describe_route(action['route'], {uplink: bridge}), uplink)
    if op == 'del_route':
        return 'remove route %s' % describe_route(action['route'], {uplink: bridge})
    if op == 'set_uplink':
        what = []
        if action.get('mtu') is not None:
            what.append('MTU %d' % action['mtu'])
        if action.get('mac'):
            what.append('MAC %s' % action['mac'])
        if action.get('up') is not None:
            what.append('state %s' % ('up' if action['up'] else 'down'))
        return 'restore %s\'s %s' % (uplink, ', '.join(what))
    return op


# ---- bridge type ---------------------------------------------------------------------------------------

def resolve_bridge_type(requested, bridge, link_kind, link_exists, in_ovs):
    """auto: an existing bridge keeps its type; a missing one is created only for pipework's names
    (``br*`` Linux, ``ovs*`` Open vSwitch). Returns (type, exists)."""
    if in_ovs:
        kind = 'ovs'
    elif link_exists and link_kind == 'bridge':
        kind = 'linux'
    elif link_exists:
        raise PipeworkError('bridge: %r exists and is not a bridge (it is a %s interface)'
                            % (bridge, link_kind or 'plain'))
    else:
        kind = None
    if kind is not None:
        if requested not in ('auto', kind):
            raise PipeworkError('bridge_type: bridge %r is %s bridge, not %s'
                                % (bridge, 'an Open vSwitch' if kind == 'ovs' else 'a Linux', requested))
        return kind, True
    if requested != 'auto':
        return requested, False
    if bridge.startswith('br'):
        return 'linux', False
    if bridge.startswith('ovs'):
        return 'ovs', False
    raise PipeworkError('bridge: %r does not exist, and with bridge_type=auto only names starting with "br" (Linux) '
                        'or "ovs" (Open vSwitch) are created; set bridge_type to create it' % bridge)


# ---- plans ---------------------------------------------------------------------------------------------

def plan_present(view, datapath_type='system'):
    """The actions that move the uplink's addressing to the bridge and enslave it (empty when done)."""
    up = view['uplink']
    br = view['bridge']
    uplink, bridge = up['name'], view['bridge_name']
    actions = []
    if br is None:
        actions.append({'op': 'create_bridge', 'type': view['bridge_type'], 'datapath_type': datapath_type,
                        'mac': up['mac'], 'mtu': up['mtu']})
        actions.append({'op': 'bridge_up'})
    else:
        change = {}
        if (br.get('mac') or '').lower() != (up['mac'] or '').lower():
            change['mac'] = up['mac']
        if br.get('mtu') != up['mtu']:
            change['mtu'] = up['mtu']
        if change:
            change['op'] = 'set_bridge'
            actions.append(change)
        if not br.get('up'):
            actions.append({'op': 'bridge_up'})
    on_bridge = set(addr_key(a) for a in view['bridge_addresses'])
    for addr in rollback.address_order(view['uplink_addresses']):
        if addr_key(addr) not in on_bridge:
            actions.append({'op': 'add_address', 'dev': bridge, 'addr': addr,
                            'label': rollback.renamed_label(addr.get('label'), uplink, bridge)})
    if not up.get('up'):
        actions.append({'op': 'uplink_up'})
    if not view['enslaved']:
        actions.append({'op': 'enslave'})
    for route in rollback.route_order(view['uplink_routes']):
        actions.append({'op': 'move_route', 'direction': 'to_bridge', 'route': route})
    for addr in rollback.address_order(view['uplink_addresses'], removing=True):
        actions.append({'op': 'del_address', 'dev': uplink, 'addr': addr})
    return actions


def plan_absent(view, original):
    """The actions that put the uplink back as ``original`` (the snapshot) describes.

    Without a snapshot the module cannot tell which of the bridge's addresses were the uplink's: it only
    releases the uplink, and refuses when that would leave the host's addresses on a bridge with no way out.
    """
    up = view['uplink']
    uplink, bridge = up['name'], view['bridge_name']
    actions = []
    if original is None:
        if view['enslaved']:
            if not view['uplink_addresses'] and view['bridge_addresses']:
                raise PipeworkError(
                    'state=absent: %s is a port of %s, which carries %s, and there is no snapshot of %s\'s own '
                    'addressing (it lives in %s and a reboot clears it): releasing %s would cut the host off. '
                    'Move the addresses back by hand, or release it with state=present followed by a fresh '
                    'migration and then state=absent'
                    % (uplink, bridge, ', '.join(cidr(a) for a in view['bridge_addresses']), uplink,
                       rollback.STATE_DIR, uplink))
            actions.append({'op': 'release'})
        return actions
    on_uplink = set(addr_key(a) for a in view['uplink_addresses'])
    on_bridge = set(addr_key(a) for a in view['bridge_addresses'])
    for addr in rollback.address_order(original['addresses']):
        if addr_key(addr) not in on_uplink:
            actions.append({'op': 'add_address', 'dev': uplink, 'addr': addr,
                            'label': addr.get('label') if addr.get('label') != uplink else None})
    if view['enslaved']:
        actions.append({'op': 'release'})
    uplink_routes = set(route_identity(r) for r in view['uplink_routes'])
    bridge_routes = set(route_identity(r) for r in view['bridge_routes'])
    rename = {uplink: bridge}
    for route in rollback.route_order(original['routes']):
        if route_identity(route) not in uplink_routes:
            actions.append({'op': 'move_route', 'direction': 'to_uplink', 'route': route})
        elif route_identity(route, rename) in bridge_routes:
            actions.append({'op': 'del_route', 'route': route})
    for addr in rollback.address_order(original['addresses'], removing=True):
        if addr_key(addr) in on_bridge:
            actions.append({'op': 'del_address', 'dev': bridge, 'addr': addr})
    change = {}
    if original.get('mtu') and up['mtu'] != original['mtu']:
        change['mtu'] = original['mtu']
    if original.get('mac') and (up['mac'] or '').lower() != original['mac'].lower():
        change['mac'] = original['mac']
    if original.get('up', True) != bool(up.get('up')):
        change['up'] = original.get('up', True)
    if change:
        change['op'] = 'set_uplink'
        actions.append(change)
    return actions


def is_migrated(view):
    """Migrated = enslaved, and nothing left to move (the plan for state=present is empty)."""
    return view['bridge'] is not None and not plan_present(view)


# ---- snapshots and records -----------------------------------------------------------------------------

def original_state(view, previous=None):
    """The state to restore: the uplink's addressing before any migration.

    A run that completes an interrupted or drifted migration keeps the earlier snapshot's original (the
    addresses that already moved are still the uplink's) and adds what is on the uplink now.
    """
    up = view['uplink']
    if previous is not None:
        addresses = list(previous['addresses'])
        routes = list(previous['routes'])
        mtu, mac, is_up = previous['mtu'], previous['mac'], previous.get('up', True)
    else:
        addresses, routes = [], []
        mtu, mac, is_up = up['mtu'], up['mac'], bool(up.get('up'))
    known = set(addr_key(a) for a in addresses)
    for addr in view['uplink_addresses']:
        if addr_key(addr) not in known:
            addresses.append(addr)
            known.add(addr_key(addr))
    known = set(route_identity(r) for r in routes)
    for route in view['uplink_routes']:
        if route_identity(route) not in known:
            routes.append(route)
            known.add(route_identity(route))
    return {'addresses': addresses, 'routes': routes, 'mtu': mtu, 'mac': mac, 'up': is_up}


def default_probe(view, original=None):
    """The default gateway the uplink's routes use (IPv4 first), or None."""
    routes = list(view['uplink_routes']) + list((original or {}).get('routes') or [])
    for family in (4, 6):
        for route in routes:
            if route['family'] == family and route['dst'] == 'default' and route.get('table', 254) == 254:
                if route.get('gateway'):
                    return route['gateway']
                for nh in route.get('nexthops') or []:
                    if nh.get('gateway'):
                        return nh['gateway']
    return None


# ---- diff ----------------------------------------------------------------------------------------------

def summary(view):
    """What --diff shows: per device, master, MAC, MTU, addresses and routes."""
    up = view['uplink']
    uplink, bridge = up['name'], view['bridge_name']
    br = view['bridge']
    return {
        'uplink': {
            'name': uplink,
            'master': bridge if view['enslaved'] else None,
            'mac': up['mac'], 'mtu': up['mtu'], 'up': bool(up.get('up')),
            'addresses': [cidr(a) for a in view['uplink_addresses']],
            'routes': [describe_route(r) for r in view['uplink_routes']],
        },
        'bridge': {
            'name': bridge,
            'type': view['bridge_type'],
            'exists': br is not None,
            'mac': br.get('mac') if br else None,
            'mtu': br.get('mtu') if br else None,
            'up': bool(br.get('up')) if br else False,
            'addresses': [cidr(a) for a in view['bridge_addresses']],
            'routes': [describe_route(r) for r in view['bridge_routes']],
        },
    }


def simulate(before, actions):
    """The summary after the actions (check mode and --diff)."""
    after = {'uplink': dict(before['uplink']), 'bridge': dict(before['bridge'])}
    for side in ('uplink', 'bridge'):
        after[side]['addresses'] = list(before[side]['addresses'])
        after[side]['routes'] = list(before[side]['routes'])
    uplink, bridge = after['uplink']['name'], after['bridge']['name']
    side_of = {uplink: 'uplink', bridge: 'bridge'}
    rename = {uplink: bridge}
    for action in actions:
        op = action['op']
        if op == 'create_bridge':
            after['bridge'].update(exists=True, mac=action['mac'], mtu=action['mtu'], type=action['type'])
        elif op == 'set_bridge':
            for key in ('mac', 'mtu'):
                if action.get(key):
                    after['bridge'][key] = action[key]
        elif op == 'bridge_up':
            after['bridge']['up'] = True
        elif op == 'uplink_up':
            after['uplink']['up'] = True
        elif op == 'add_address':
            after[side_of[action['dev']]]['addresses'].append(cidr(action['addr']))
        elif op == 'del_address':
            _discard(after[side_of[action['dev']]]['addresses'], cidr(action['addr']))
        elif op == 'enslave':
            after['uplink']['master'] = bridge
        elif op == 'release':
            after['uplink']['master'] = None
        elif op == 'move_route':
            route = action['route']
            if action['direction'] == 'to_bridge':
                _discard(after['uplink']['routes'], describe_route(route))
                after['bridge']['routes'].append(describe_route(route, rename))
            else:
                _discard(after['bridge']['routes'], describe_route(route, rename))
                after['uplink']['routes'].append(describe_route(route))
        elif op == 'del_route':
            _discard(after['bridge']['routes'], describe_route(action['route'], rename))
        elif op == 'set_uplink':
            for key in ('mac', 'mtu', 'up'):
                if action.get(key) is not None:
                    after['uplink'][key] = action[key]
    return after


def _discard(items, value):
    if value in items:
        items.remove(value)
