# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ovs_vlan_port planning: (wants, OvsState, host NamespaceState) -> one OVS transaction. Pure; no I/O.

Also the lockout rule: a change that stops untagged traffic on a port carrying the host's own
addresses, or on the uplink of a bridge whose internal port carries them untagged, is refused unless
the item says ``force: true``.
"""

from __future__ import annotations

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.spec import DEFAULT_DATAPATH_TYPE

CREATED, UPDATED, REMOVED, NONE = 'created', 'updated', 'removed', 'none'

# Interface external_ids that mark an endpoint (a container's or a VM's port), never an uplink:
# ovs-docker and docker_veth set container_id; OVN, OpenStack and libvirt set iface-id / vm-uuid.
ENDPOINT_KEYS = ('container_id', 'iface-id', 'vm-uuid', 'vm-id')
BRIDGE_PREFIX = 'ovs'


# ---- VLAN semantics ---------------------------------------------------------------------------

def effective_mode(vlan_mode, tag):
    """OVS's rule for an empty vlan_mode: an access port if tag is set, else a trunk port."""
    return vlan_mode or ('access' if tag else 'trunk')


def passes_untagged(cols):
    """Whether untagged frames on a port with these columns stay untagged traffic (VLAN 0).

    Untagged traffic stops when the mode is access or native-* with a non-zero tag, or trunk with a
    trunks list that does not contain 0 (an empty list trunks every VLAN). native-tagged with no tag
    and a trunks list without 0 stops it too (measured with OVS 3.1, userspace datapath).
    """
    if cols is None:
        return False
    tag = cols.get('tag') or 0
    trunks = cols.get('trunks') or []
    mode = effective_mode(cols.get('vlan_mode'), tag)
    trunks_vlan0 = not trunks or 0 in trunks
    if mode in ('access', 'native-untagged'):
        return not tag
    if mode == 'native-tagged':
        return not tag and trunks_vlan0
    return trunks_vlan0


# ---- plans ------------------------------------------------------------------------------------

class BridgePlan:
    """A bridge an item needs: existing, or created by this run (with its datapath type)."""

    def __init__(self, name, create, datapath_type):
        self.name = name
        self.create = create
        self.datapath_type = datapath_type

    def commands(self):
        if not self.create:
            return []
        return ovsdb.cmd_add_bridge(self.name, self.datapath_type) + [
            ['set', 'Bridge', self.name, 'external_ids:%s=%s' % (ovsdb.EXT_OWNER, ovsdb.quote(ovsdb.OWNER))]]

    def changes(self):
        return ['create Open vSwitch bridge %s (datapath %s)' % (self.name, self.datapath_type)] if self.create else []


class PortPlan:
    """The commands for one port, their undo, and its columns before and after."""

    def __init__(self, want):
        self.want = want
        self.action = NONE
        self.changes = []
        self.commands = []
        self.undo = []
        self.check = []    # interfaces to read back (ofport/error) after the transaction
        self.before = None  # columns (describe()) or None when the port does not exist
        self.after = None   # columns after the run, or None when the port is (to be) gone
        self.bridge = None  # the bridge the port is (or was, for absent) on

    @property
    def changed(self):
        return self.action != NONE


def describe(port):
    """The columns of a Port row that this module reports and manages."""
    return {
        'bridge': port['bridge'],
        'tag': port.get('tag') or None,
        'trunks': list(port.get('trunks') or []),
        'vlan_mode': port.get('vlan_mode'),
        'external_ids': dict(port.get('external_ids') or {}),
    }


def _vlan_text(cols):
    parts = []
    if cols.get('tag'):
        parts.append('tag %d' % cols['tag'])
    if cols.get('trunks'):
        parts.append('trunks %s' % ','.join(str(t) for t in cols['trunks']))
    if cols.get('vlan_mode'):
        parts.append('vlan_mode %s' % cols['vlan_mode'])
    return ', '.join(parts) or 'untagged'


def plan_bridge(want, ovs, host, bridges):
    """The bridge a port is added to. A missing bridge is created only when its name starts with 'ovs'
    or datapath_type is given, so a typo never creates an isolated bridge."""
    name = want.bridge
    plan = bridges.get(name)
    if plan is not None:
        if want.datapath_explicit and plan.datapath_type != want.datapath_type:
            raise PipeworkError('%s: bridge %r %s datapath_type %s, not %s'
                                % (want.opt('datapath_type'), name, 'is created with' if plan.create else 'exists with',
                                   plan.datapath_type, want.datapath_type))
        return plan
    if name in ovs.bridges:
        have = ovs.bridges[name]['datapath_type']
        if want.datapath_explicit and have != want.datapath_type:
            raise PipeworkError('%s: bridge %r exists with datapath_type %s, not %s'
                                % (want.opt('datapath_type'), name, have, want.datapath_type))
        plan = BridgePlan(name, False, have)
    else:
        link = host.links.get(name) if host is not None else None
        if link is not None:
            raise PipeworkError('%s: %r is not an Open vSwitch bridge (it is a %s interface of the host)'
                                % (want.opt('bridge'), name, link['kind'] or 'plain'))
        if not (name.startswith(BRIDGE_PREFIX) or want.datapath_explicit):
            raise PipeworkError('%s: Open vSwitch bridge %r does not exist; a missing bridge is created only when its '
                                'name starts with "%s" or datapath_type is given (so a typo never creates a bridge)'
                                % (want.opt('bridge'), name, BRIDGE_PREFIX))
        plan = BridgePlan(name, True, want.datapath_type or DEFAULT_DATAPATH_TYPE)
    bridges[name] = plan
    return plan


def plan_port(want, ovs, host, bridges):
    """Plan one item against the OVS snapshot."""
    if want.state == 'absent':
        return _plan_absent(want, ovs)
    p = PortPlan(want)
    existing = ovs.ports.get(want.port)
    if existing is not None:
        if want.bridge is not None and existing['bridge'] != want.bridge:
            raise PipeworkError('%s: port %r is on bridge %r, not %r; name that bridge, or remove the port there first '
                                '(state: absent)' % (want.opt('bridge'), want.port, existing['bridge'], want.bridge))
        if want.bridge is not None and want.datapath_explicit:
            plan_bridge(want, ovs, host, bridges)
        p.before = describe(existing)
        p.bridge = existing['bridge']
        _plan_columns(p, want, p.before)
        return p
    if want.bridge is None:
        raise PipeworkError('%s: port %r is not on any Open vSwitch bridge; give bridge to add it'
                            % (want.opt('bridge'), want.port))
    member_of = ovs.port_of_interface(want.port)
    if member_of is not None:
        raise PipeworkError('%s: interface %r is already a member of port %r on bridge %r'
                            % (want.opt('port'), want.port, member_of, ovs.ports[member_of]['bridge']))
    bridge = plan_bridge(want, ovs, host, bridges)
    p.bridge = bridge.name
    p.action = CREATED
    cols = {
        'bridge': bridge.name,
        'tag': want.tag or None,
        'trunks': list(want.trunks or []),
        'vlan_mode': want.vlan_mode,
        'external_ids': {ovsdb.EXT_OWNER: ovsdb.OWNER},
    }
    for key, value in (want.external_ids or {}).items():
        if value is None:
            cols['external_ids'].pop(key, None)
        else:
            cols['external_ids'][key] = value
    if want.port != bridge.name:  # the bridge's own (local) port comes with the bridge
        p.commands += ovsdb.cmd_add_port(bridge.name, want.port, iface_external_ids={ovsdb.EXT_OWNER: ovsdb.OWNER})
        p.undo += ovsdb.cmd_del_port(want.port)
    # Port, tag, trunks and mode in ONE transaction: the port is never untagged for a moment.
    p.commands += ovsdb.cmd_set_port_columns(want.port, tag=cols['tag'], trunks=cols['trunks'] or None,
                                             vlan_mode=cols['vlan_mode'])
    p.commands += ovsdb.cmd_set_map_keys('Port', want.port, 'external_ids', cols['external_ids'])
    p.check.append(want.port)
    p.changes.append('add port %s to bridge %s (%s)' % (want.port, bridge.name, _vlan_text(cols)))
    p.after = cols
    return p


def _plan_columns(p, want, before):
    """Set what differs, leave what is unmanaged; the undo restores the old values."""
    after = dict(before, trunks=list(before['trunks']), external_ids=dict(before['external_ids']))
    set_kw, undo_kw = {}, {}
    if want.tag is not None and (before['tag'] or 0) != want.tag:
        set_kw['tag'] = want.tag
        undo_kw['tag'] = before['tag'] or 0
        after['tag'] = want.tag or None
        p.changes.append('set tag of %s to %d' % (want.port, want.tag) if want.tag else 'clear tag of %s' % want.port)
    if want.trunks is not None and before['trunks'] != want.trunks:
        set_kw['trunks'] = want.trunks
        undo_kw['trunks'] = before['trunks']
        after['trunks'] = list(want.trunks)
        p.changes.append('set trunks of %s to %s' % (want.port, ','.join(str(t) for t in want.trunks))
                         if want.trunks else 'clear trunks of %s' % want.port)
    if want.vlan_mode is not None and before['vlan_mode'] != want.vlan_mode:
        set_kw['vlan_mode'] = want.vlan_mode
        undo_kw['vlan_mode'] = before['vlan_mode'] or ''
        after['vlan_mode'] = want.vlan_mode
        p.changes.append('set vlan_mode of %s to %s' % (want.port, want.vlan_mode))
    ids, undo_ids = {}, {}
    for key, value in sorted((want.external_ids or {}).items()):
        old = before['external_ids'].get(key)
        if value == old:
            continue
        ids[key] = value
        undo_ids[key] = old
        if value is None:
            after['external_ids'].pop(key, None)
            p.changes.append('remove external_ids:%s of %s' % (key, want.port))
        else:
            after['external_ids'][key] = value
            p.changes.append('set external_ids:%s of %s to %r' % (key, want.port, value))
    p.after = after
    if not p.changes:
        return
    p.action = UPDATED
    p.commands += ovsdb.cmd_set_port_columns(want.port, **set_kw)
    p.commands += ovsdb.cmd_set_map_keys('Port', want.port, 'external_ids', ids)
    p.undo += ovsdb.cmd_set_port_columns(want.port, **undo_kw)
    p.undo += ovsdb.cmd_set_map_keys('Port', want.port, 'external_ids', undo_ids)


def _plan_absent(want, ovs):
    p = PortPlan(want)
    existing = ovs.ports.get(want.port)
    p.bridge = want.bridge
    if existing is None:
        return p
    if want.bridge is not None and existing['bridge'] != want.bridge:
        raise PipeworkError('%s: port %r is on bridge %r, not %r; nothing of %r was removed'
                            % (want.opt('bridge'), want.port, existing['bridge'], want.bridge, want.bridge))
    if existing['bridge'] == want.port:
        raise PipeworkError('%s: %r is the local port of bridge %r; removing it means removing the bridge, '
                            'which this module never does' % (want.opt('port'), want.port, existing['bridge']))
    p.bridge = existing['bridge']
    p.before = describe(existing)
    p.action = REMOVED
    p.commands += [['del-port', existing['bridge'], want.port]]
    p.undo += _readd_commands(want.port, existing, ovs)
    p.changes.append('remove port %s from bridge %s' % (want.port, existing['bridge']))
    return p


def _readd_commands(name, port, ovs):
    """Best-effort undo of a removal: the port with its interfaces, their type and both rows' columns."""
    ifaces = port['interfaces'] or [name]
    if len(ifaces) > 1:
        cmds = [['--may-exist', 'add-bond', port['bridge'], name] + list(ifaces)]
    else:
        cmds = [['--may-exist', 'add-port', port['bridge'], name]]
    for iface in ifaces:
        row = ovs.interfaces.get(iface) or {}
        if row.get('type'):
            cmds.append(['set', 'Interface', iface, 'type=%s' % row['type']])
        cmds += ovsdb.cmd_set_map_keys('Interface', iface, 'external_ids', row.get('external_ids') or {})
    cmds += ovsdb.cmd_set_port_columns(name, tag=port.get('tag') or None, trunks=port.get('trunks') or None,
                                       vlan_mode=port.get('vlan_mode'))
    cmds += ovsdb.cmd_set_map_keys('Port', name, 'external_ids', port.get('external_ids') or {})
    return cmds


def plan_all(wants, ovs, host):
    """Plans for every item (in order) and the bridges they need."""
    bridges = {}
    plans = [plan_port(w, ovs, host, bridges) for w in wants]
    return plans, bridges


# ---- lockout ----------------------------------------------------------------------------------

def port_interfaces(name, ovs):
    port = ovs.ports.get(name)
    if port is None:
        return [name]
    return list(port['interfaces']) or [name]


def host_addresses(name, ovs, host):
    """Global addresses the host namespace holds on the interfaces of port ``name``."""
    found = []
    for iface in port_interfaces(name, ovs):
        link = host.links.get(iface)
        if link is not None:
            found += host.global_addresses(link['index'])
    return found


def is_internal(name, ovs):
    return any((ovs.interfaces.get(i) or {}).get('type') == 'internal' for i in port_interfaces(name, ovs))


def is_uplink(name, ovs, host):
    """A port that leads off its bridge: not internal, not a container's or VM's port, not a tap."""
    for iface in port_interfaces(name, ovs):
        row = ovs.interfaces.get(iface) or {}
        if row.get('type') == 'internal':
            return False
        if any(key in (row.get('external_ids') or {}) for key in ENDPOINT_KEYS):
            return False
        link = host.links.get(iface)
        if link is not None and link['kind'] == 'tun':
            return False
    return True


def resulting_ports(plans, ovs):
    """Every port's columns after the run (None for ports the run removes)."""
    out = dict((name, describe(port)) for name, port in ovs.ports.items())
    for p in plans:
        if p.changed:
            out[p.want.port] = p.after
    return out


def check_lockout(plans, ovs, host):
    """Refuse changes that would cut the host off; return warnings for the ones forced through.

    A port carrying the host's own addresses: refused when it is added to a bridge, removed, or changed
    so that untagged traffic stops. An uplink of a bridge whose internal port carries the host's
    addresses untagged (after this run): refused when it is removed or stops untagged traffic.
    """
    after_all = resulting_ports(plans, ovs)
    refused, warnings = [], []
    for p in plans:
        if not p.changed:
            continue
        name = p.want.port
        stops = passes_untagged(p.before) and not passes_untagged(p.after)
        reason = None
        addrs = host_addresses(name, ovs, host)
        if addrs and (stops or p.before is None or p.after is None):
            reason = 'port %s carries the host\'s own addresses (%s)' % (name, ', '.join(str(a) for a in addrs))
        elif stops and not addrs and is_uplink(name, ovs, host):
            reason = _uplink_reason(name, p.before['bridge'], ovs, host, after_all)
        if reason is None:
            continue
        doing = '; '.join(p.changes)
        if p.want.force:
            warnings.append('%s: forced (force: true): %s, although %s' % (p.want.label, doing, reason))
        else:
            refused.append('%s: refusing to %s: %s, and this would stop its untagged traffic (a lockout); '
                           'set force: true to do it anyway' % (p.want.label, doing, reason))
    if refused:
        raise PipeworkError(' | '.join(refused), refused=refused)
    return warnings


def _uplink_reason(name, bridge, ovs, host, after_all):
    for other in ovs.bridges.get(bridge, {}).get('ports', []):
        cols = after_all.get(other)
        if other == name or cols is None or cols['bridge'] != bridge:
            continue
        if not is_internal(other, ovs) or not passes_untagged(cols):
            continue
        other_addrs = host_addresses(other, ovs, host)
        if other_addrs:
            return ('port %s is an uplink of bridge %s, whose internal port %s carries the host\'s own addresses (%s) '
                    'untagged' % (name, bridge, other, ', '.join(str(a) for a in other_addrs)))
    return None


# ---- the transaction --------------------------------------------------------------------------

def transaction(plans, bridges):
    """(commands, interfaces to read back, undo commands) of the whole run, as ONE transaction each."""
    commands, check, undo = [], [], []
    for b in bridges.values():
        if b.create:
            commands += b.commands()
            check.append(b.name)
    for p in plans:
        commands += p.commands
        check += [name for name in p.check if name not in check]
    for p in reversed(plans):
        undo += p.undo
    undo += [['--if-exists', 'del-br', b.name] for b in bridges.values() if b.create]
    return commands, check, undo
