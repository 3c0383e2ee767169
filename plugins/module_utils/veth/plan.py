# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""docker_veth planning: (want, have) -> the actions that make have equal want. Pure; no I/O.

``have`` is a host NamespaceState, the OvsState and each target's NamespaceState (netlink_state.py).
The executor (veth_apply.py) carries the actions out in batches.
"""

from __future__ import annotations

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import derive_host_ifname

CREATED, UPDATED, RECREATED, REMOVED, NONE = 'created', 'updated', 'recreated', 'removed', 'none'


class BridgePlan:
    """What the run does to one bridge: its type, whether it is created, an address to add."""

    def __init__(self, name, kind, create, datapath_type=None):
        self.name = name
        self.kind = kind  # 'linux' or 'ovs'
        self.create = create
        self.datapath_type = datapath_type
        self.addresses = []  # host addresses to add on the bridge device

    def changes(self):
        out = []
        if self.create:
            out.append('create %s bridge %s%s' % (self.kind, self.name,
                                                  ' (datapath %s)' % self.datapath_type if self.kind == 'ovs' else ''))
        out.extend('add address %s to bridge %s' % (a, self.name) for a in self.addresses)
        return out


def plan_bridges(attachments, host, ovs):
    """Resolve each bridge's type (auto: an existing bridge keeps its type; pipework's br*/ovs* rule)."""
    plans = {}
    for a in attachments:
        if a.state != 'present':
            continue
        plan = plans.get(a.bridge)
        if plan is None:
            plan = _bridge_plan(a, host, ovs)
            plans[a.bridge] = plan
        elif a.bridge_type != 'auto' and a.bridge_type != plan.kind:
            raise PipeworkError('%s: bridge_type %s conflicts with bridge %r, which is %s'
                                % (a.opt('bridge_type'), a.bridge_type, a.bridge, plan.kind))
        a.resolved_bridge_type = plan.kind
        if a.vlan and plan.kind == 'linux':
            raise PipeworkError('%s: vlan %d needs an Open vSwitch bridge; %r is a Linux bridge'
                                % (a.opt('vlan'), a.vlan, a.bridge))
        if a.bridge_address is not None:
            dev = host.links.get(a.bridge)
            have = host.global_addresses(dev['index']) if dev and not plan.create else []
            if a.bridge_address not in have and a.bridge_address not in plan.addresses:
                plan.addresses.append(a.bridge_address)
    return plans


def _bridge_plan(a, host, ovs):
    name = a.bridge
    if name in ovs.bridges:
        kind = 'ovs'
    else:
        link = host.links.get(name)
        if link is not None and link['kind'] == 'bridge':
            kind = 'linux'
        elif link is not None:
            raise PipeworkError('%s: %r exists and is not a bridge (it is a %s interface)'
                                % (a.opt('bridge'), name, link['kind'] or 'plain'))
        else:
            kind = None
    if kind is not None:
        if a.bridge_type not in ('auto', kind):
            raise PipeworkError('%s: bridge %r is a %s bridge, not %s' % (a.opt('bridge_type'), name, kind, a.bridge_type))
        if kind == 'ovs' and a.params.get('datapath_type') and ovs.bridges[name]['datapath_type'] != a.datapath_type:
            raise PipeworkError('%s: bridge %r exists with datapath_type %s, not %s'
                                % (a.opt('datapath_type'), name, ovs.bridges[name]['datapath_type'], a.datapath_type))
        return BridgePlan(name, kind, create=False)
    if a.bridge_type == 'auto':
        if name.startswith('br'):
            kind = 'linux'
        elif name.startswith('ovs'):
            kind = 'ovs'
        else:
            raise PipeworkError('%s: bridge %r does not exist, and with bridge_type=auto only names starting with '
                                '"br" (Linux) or "ovs" (Open vSwitch) are created; set bridge_type to create it'
                                % (a.opt('bridge'), name))
    else:
        kind = a.bridge_type
    return BridgePlan(name, kind, create=True, datapath_type=a.datapath_type if kind == 'ovs' else None)


class AttachmentPlan:
    """The actions for one attachment. ``host_ops``/``ns_ops`` are tuples the executor understands."""

    def __init__(self, want):
        self.want = want
        self.action = NONE
        self.changes = []
        self.create_veth = False
        self.delete_host_link = None   # name of a host link to delete first
        self.set_master = None         # Linux bridge to enslave the host end to
        self.release_master = False
        self.host_mtu = None
        self.host_up = False
        self.ovs_commands = []
        self.ovs_pre_commands = []     # stale rows removed in an earlier transaction (see _plan_bridge_port)
        self.ovs_check = []            # interfaces to read back after the transaction
        self.ovs_undo = []             # commands that undo ovs_commands
        self.ns_ops = []               # container-side operations, in order
        self.replaced_default_routes = []
        self.before = {}
        self.after = {}

    @property
    def changed(self):
        return self.action != NONE

    def note(self, text):
        self.changes.append(text)
        if self.action == NONE:
            self.action = UPDATED


def external_ids(want):
    ids = {
        ovsdb.EXT_CONTAINER_ID: want.container.id if want.container else want.identity,
        ovsdb.EXT_CONTAINER_IFACE: want.ifname,
        ovsdb.EXT_OWNER: ovsdb.OWNER,
        ovsdb.EXT_TARGET: handle_of(want),
    }
    return ids


def handle_of(want):
    """The operator's handle for the target: a container's name, a netns name, or pid:N."""
    if want.target_kind == 'container':
        return want.container.name if want.container else want.target
    if want.target_kind == 'pid':
        return 'pid:%d' % want.target
    return want.target


def _describe(host_link, ns_link, ns, ovs_port, bridge_name):
    if host_link is None or ns_link is None:
        return {}
    return {
        'host_ifname': host_link['name'],
        'bridge': bridge_name,
        'vlan': (ovs_port or {}).get('tag'),
        'addresses': [str(a) for a in ns.global_addresses(ns_link['index'])],
        'mac': ns_link['mac'],
        'mtu': ns_link['mtu'],
    }


def paired(host_link, ns_link):
    return (host_link is not None and ns_link is not None and host_link['kind'] == 'veth'
            and ns_link['kind'] == 'veth' and host_link['peer'] == ns_link['index']
            and ns_link['peer'] == host_link['index'])


def plan_present(want, bridge, host, ovs, ns):
    """Plan one present attachment against the host, OVS and its namespace."""
    p = AttachmentPlan(want)
    host_link = host.links.get(want.host_ifname)
    ns_link = ns.links.get(want.ifname)
    ovs_port_name = ovs.port_of_interface(want.host_ifname)
    ovs_port = ovs.ports.get(ovs_port_name) if ovs_port_name else None
    current_bridge = None
    if ovs_port is not None:
        current_bridge = ovs_port['bridge']
    elif host_link is not None and host_link['master']:
        master = host.by_index.get(host_link['master'])
        current_bridge = master['name'] if master else None
    p.before = _describe(host_link, ns_link, ns, ovs_port, current_bridge) if paired(host_link, ns_link) else {}

    if ns_link is not None and not paired(host_link, ns_link):
        raise PipeworkError('%s: %r already exists in %s %r and is not the peer of %s; choose another ifname '
                            'or remove that interface' % (want.opt('ifname'), want.ifname, want.target_kind,
                                                          want.target, want.host_ifname))
    if paired(host_link, ns_link):
        _plan_update(p, want, bridge, host, host_link, ns, ns_link, ovs_port, current_bridge)
    else:
        if host_link is not None:
            _check_host_link_is_ours(want, host_link, ovs)
            p.delete_host_link = want.host_ifname
            p.action = RECREATED
            p.changes.append('recreate %s: its peer is not %s in the %s' % (want.host_ifname, want.ifname, want.target_kind))
        else:
            p.action = CREATED
            p.changes.append('create veth %s <-> %s:%s' % (want.host_ifname, handle_of(want), want.ifname))
        p.create_veth = True
        p.host_up = True
        _plan_bridge_port(p, want, bridge, ovs_port, current_bridge, new=True)
        _plan_ns_config(p, want, ns, None)
    p.after = _after(p, want, bridge)
    return p


def _check_host_link_is_ours(want, host_link, ovs):
    """Never delete a host interface this collection did not make (an explicit host_ifname could name eth0)."""
    if host_link['kind'] != 'veth':
        raise PipeworkError('%s: %r exists on the host and is not a veth (it is a %s interface); choose another name'
                            % (want.opt('host_ifname'), want.host_ifname, host_link['kind'] or 'plain'))
    ids = (ovs.interfaces.get(want.host_ifname) or {}).get('external_ids') or {}
    derived = not want.params.get('host_ifname')
    if not derived and ids.get(ovsdb.EXT_OWNER) != ovsdb.OWNER and host_link['peer']:
        raise PipeworkError('%s: veth %r exists on the host, is paired elsewhere and was not made by this collection'
                            % (want.opt('host_ifname'), want.host_ifname))


def _after(p, want, bridge):
    before = p.before or {}
    addrs = [str(a) for a in want.addresses] if want.addresses is not None else before.get('addresses', [])
    vlan = before.get('vlan')
    if want.vlan is not None:
        vlan = want.vlan or None
    if bridge.kind == 'linux':
        vlan = None
    return {
        'host_ifname': want.host_ifname,
        'bridge': want.bridge,
        'vlan': vlan,
        'addresses': addrs,
        'mac': want.mac or before.get('mac'),
        'mtu': want.mtu or before.get('mtu'),
    }


def _plan_bridge_port(p, want, bridge, ovs_port, current_bridge, new):
    ids = external_ids(want)
    if bridge.kind == 'linux':
        if ovs_port is not None:
            p.ovs_commands += ovsdb.cmd_del_port(want.host_ifname)
            p.note('remove %s from Open vSwitch bridge %s' % (want.host_ifname, current_bridge))
        if new or current_bridge != want.bridge:
            p.set_master = want.bridge
            if not new:
                p.note('move %s to Linux bridge %s' % (want.host_ifname, want.bridge))
        return
    # Open vSwitch: the port and its tag in one command, so it is never untagged for a moment.
    if new or ovs_port is None or current_bridge != want.bridge:
        if not new and current_bridge:
            p.note('move %s from %s to %s' % (want.host_ifname, current_bridge, want.bridge))
        elif not new:
            p.note('add %s to Open vSwitch bridge %s' % (want.host_ifname, want.bridge))
        if not new and ovs_port is None and current_bridge:
            p.release_master = True
        tag = want.vlan if want.vlan else None
        if want.vlan is None and ovs_port is not None:
            tag = ovs_port.get('tag')  # unset vlan: keep what the port had
        if ovs_port is not None:
            # A stale row of the same name (its veth died with the container) must go in an EARLIER
            # transaction: deleted and re-added in one, the userspace datapath keeps the dead device and
            # the new veth never passes traffic.
            p.ovs_pre_commands += ovsdb.cmd_del_port(want.host_ifname)
        p.ovs_commands += ovsdb.cmd_add_port(want.bridge, want.host_ifname, tag=tag, iface_external_ids=ids)
        p.ovs_check.append(want.host_ifname)
        p.ovs_undo += ovsdb.cmd_del_port(want.host_ifname)
        return
    if want.vlan is not None and (ovs_port.get('tag') or 0) != want.vlan:
        p.ovs_commands += ovsdb.cmd_set_port_columns(want.host_ifname, tag=want.vlan)
        p.ovs_undo += ovsdb.cmd_set_port_columns(want.host_ifname, tag=ovs_port.get('tag') or 0)
        p.note('set VLAN tag of %s to %s' % (want.host_ifname, want.vlan or 'none'))


def _plan_update(p, want, bridge, host, host_link, ns, ns_link, ovs_port, current_bridge):
    _plan_bridge_port(p, want, bridge, ovs_port, current_bridge, new=False)
    if want.mtu is not None and host_link['mtu'] != want.mtu:
        p.host_mtu = want.mtu
        p.note('set MTU of %s to %d' % (want.host_ifname, want.mtu))
    if not host_link['up']:
        p.host_up = True
        p.note('bring %s up' % want.host_ifname)
    _plan_ns_config(p, want, ns, ns_link)


def _plan_ns_config(p, want, ns, ns_link):
    """Container-side configuration: MTU, MAC, addresses, up, routes, default route."""
    new = ns_link is None
    index = None if new else ns_link['index']
    if not new:
        if want.mtu is not None and ns_link['mtu'] != want.mtu:
            p.ns_ops.append(('mtu', want.mtu))
            p.note('set MTU of %s to %d' % (want.ifname, want.mtu))
        if want.mac is not None and ns_link['mac'] != want.mac:
            p.ns_ops.append(('mac', want.mac))
            p.note('set MAC of %s to %s' % (want.ifname, want.mac))
    have_addrs = [] if new else ns.global_addresses(index)
    if want.addresses is not None:
        for a in have_addrs:
            if a not in want.addresses:
                p.ns_ops.append(('del_addr', a))
                p.note('remove address %s from %s' % (a, want.ifname))
        for a in want.addresses:
            if a not in have_addrs:
                p.ns_ops.append(('add_addr', a))
                if not new:
                    p.note('add address %s to %s' % (a, want.ifname))
    if new or not ns_link['up']:
        p.ns_ops.append(('up',))
        if not new:
            p.note('bring %s up' % want.ifname)
    have_routes = [] if new else [r for r in ns.routes_via(index) if r['dst'] is not None]
    if want.routes is not None:
        wanted = set(want.routes)
        for r in have_routes:
            if (r['dst'], r['gateway']) not in wanted:
                p.ns_ops.append(('del_route', r))
                p.note('remove route %s%s' % (r['dst'], ' via %s' % r['gateway'] if r['gateway'] else ''))
        have_keys = set((r['dst'], r['gateway']) for r in have_routes)
        for dest, via in want.routes:
            if (dest, via) not in have_keys:
                p.ns_ops.append(('add_route', dest, via))
                if not new:
                    p.note('add route %s%s' % (dest, ' via %s' % via if via else ''))
    defaults = {}
    for version in (4, 6):
        defaults[version] = ns.default_routes(version)
    if want.gateway is not None:
        current = defaults[want.gateway.version]
        ours = [r for r in current if index is not None and r['oif'] == index and r['gateway'] == want.gateway]
        if not (len(current) == 1 and ours):
            for r in current:
                p.ns_ops.append(('del_route', r))
                p.replaced_default_routes.append(r)
            p.ns_ops.append(('add_default', want.gateway))
            p.note('set default route via %s dev %s%s' % (
                want.gateway, want.ifname,
                ' (replacing %s)' % ', '.join(route_text(r, ns) for r in current) if current else ''))
    elif want.clear_gateway and index is not None:
        for version in (4, 6):
            for r in defaults[version]:
                if r['oif'] == index:
                    p.ns_ops.append(('del_route', r))
                    p.note('remove default route via %s dev %s' % (r['gateway'], want.ifname))


def route_text(route, ns):
    dev = ns.by_index.get(route['oif'])
    parts = [str(route['dst']) if route['dst'] else 'default']
    if route['gateway']:
        parts.append('via %s' % route['gateway'])
    if dev:
        parts.append('dev %s' % dev['name'])
    if route['priority']:
        parts.append('metric %s' % route['priority'])
    return ' '.join(parts)


def plan_absent(want, host, ovs, ns):
    """Remove the pair and its OVS port (never the bridge), plus leftovers of earlier containers."""
    p = AttachmentPlan(want)
    host_link = host.links.get(want.host_ifname) if want.host_ifname else None
    ns_link = ns.links.get(want.ifname) if ns is not None else None
    if host_link is not None and want.params.get('host_ifname'):
        _check_absent_host_link_is_ours(want, host_link, ns_link, ovs)
    if host_link is not None and (ns is None or ns_link is None or paired(host_link, ns_link)
                                  or want.params.get('host_ifname')):
        p.delete_host_link = want.host_ifname
        p.changes.append('delete veth %s' % want.host_ifname)
    elif host_link is not None:
        p.delete_host_link = want.host_ifname
        p.changes.append('delete %s (its peer is gone)' % want.host_ifname)
    if want.host_ifname and ovs.port_of_interface(want.host_ifname):
        p.ovs_commands += ovsdb.cmd_del_port(ovs.port_of_interface(want.host_ifname))
        p.changes.append('remove Open vSwitch port %s' % want.host_ifname)
    if p.changes:
        p.action = REMOVED
        p.before = {'host_ifname': want.host_ifname}
    return p


def _check_absent_host_link_is_ours(want, host_link, ns_link, ovs):
    """An explicit host_ifname may name anything on the host: delete it only if it is this attachment's."""
    if host_link['kind'] != 'veth':
        raise PipeworkError('%s: %r exists on the host and is not a veth (it is a %s interface); not deleting it'
                            % (want.opt('host_ifname'), want.host_ifname, host_link['kind'] or 'plain'))
    ids = (ovs.interfaces.get(want.host_ifname) or {}).get('external_ids') or {}
    if ids.get(ovsdb.EXT_OWNER) != ovsdb.OWNER and not paired(host_link, ns_link) \
            and not _is_derived_name(want):
        raise PipeworkError('%s: veth %r is not the peer of %s in %s %r and was not made by this collection; '
                            'not deleting it' % (want.opt('host_ifname'), want.host_ifname, want.ifname,
                                                 want.target_kind, want.target))


def _is_derived_name(want):
    """The name is the one this collection derives for the target (e.g. a removed container's full ID).

    After a container is removed the kernel destroys its namespace asynchronously (seconds under load),
    so its host veth outlives it with no peer to check and, on a Linux bridge, no OVS row to vouch for it.
    A 44-bit hash of the target's identity is not a name anyone else picks.
    """
    identities = [want.identity] if want.identity else []
    if want.target_kind == 'container' and want.target:
        identities.append(str(want.target))
    return any(want.host_ifname == derive_host_ifname(i, want.ifname) for i in identities)


def plan_purge(want, host, ovs, keep_container_id=None):
    """Leftovers of this handle and ifname from containers that no longer exist (stale OVS ports, veths).

    Returns (ovs commands, host links to delete, descriptions).
    """
    cmds, links, notes = [], [], []
    handle = handle_of(want)
    for name in ovs.interfaces_where(**{ovsdb.EXT_CONTAINER_IFACE: want.ifname}):
        ids = ovs.interfaces[name]['external_ids']
        if ids.get(ovsdb.EXT_TARGET) != handle and ids.get(ovsdb.EXT_CONTAINER_ID) != want.target:
            continue
        if keep_container_id is not None and ids.get(ovsdb.EXT_CONTAINER_ID) == keep_container_id:
            continue
        if name == want.host_ifname:
            continue
        port = ovs.port_of_interface(name)
        if port:
            cmds += ovsdb.cmd_del_port(port)
        if name in host.links:
            links.append(name)
        notes.append('purge stale port %s of an earlier %s %r' % (name, want.target_kind, want.target))
    return cmds, links, notes
