# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""docker_veth's options: the argument spec, and turning module params into validated Attachment wants.

Top-level options other than the target are defaults for every item of ``attachments``; an item's own
value wins. Everything here is pure (no kernel, no Docker), so it is unit tested directly.
"""

from __future__ import annotations

import hashlib

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.common import validation as v

TARGET_KEYS = ('container', 'netns', 'pid')
BRIDGE_TYPES = ('auto', 'linux', 'ovs')

# Options an attachment item may carry; the same names are top-level defaults.
ITEM_OPTIONS = dict(
    container=dict(type='str'),
    netns=dict(type='str'),
    pid=dict(type='int'),
    bridge=dict(type='str'),
    bridge_type=dict(type='str', choices=list(BRIDGE_TYPES)),
    datapath_type=dict(type='str'),
    bridge_address=dict(type='str'),
    ifname=dict(type='str'),
    host_ifname=dict(type='str'),
    address=dict(type='list', elements='str'),
    gateway=dict(type='str'),
    routes=dict(type='list', elements='dict', options=dict(
        dest=dict(type='str', required=True),
        via=dict(type='str'),
    )),
    mac=dict(type='str'),
    mtu=dict(type='int'),
    vlan=dict(type='int', aliases=['tag']),
    state=dict(type='str', choices=['present', 'absent']),
)

DEFAULTS = dict(bridge_type='auto', datapath_type='system', ifname='eth1', state='present')

ARGUMENT_SPEC = dict(ITEM_OPTIONS)
ARGUMENT_SPEC.update(
    attachments=dict(type='list', elements='dict', options=ITEM_OPTIONS),
    database_socket=dict(type='str'),
    docker_host=dict(type='str'),
    timeout=dict(type='int', default=30),
)


def derive_host_ifname(identity, ifname):
    """A stable, unique host-side name of at most 15 bytes: 'np' + 11 hex digits of a hash.

    ovs-docker truncates the container ID (collisions across interfaces of one container are easy);
    hashing (identity, ifname) keeps the name stable across runs and distinct per attachment.
    """
    digest = hashlib.sha256(('%s\0%s' % (identity, ifname)).encode('utf-8')).hexdigest()
    return 'np' + digest[:11]


class Attachment:
    """One validated attachment as requested (the 'want')."""

    def __init__(self, index, params):
        self.index = index
        self.label = 'attachments[%d]' % index if index is not None else 'docker_veth'
        self.params = params
        targets = [k for k in TARGET_KEYS if params.get(k) is not None]
        if len(targets) != 1:
            raise PipeworkError('%s: give exactly one of container, netns or pid (got %s)'
                                % (self.label, ', '.join(targets) or 'none'))
        self.target_kind = targets[0]
        self.target = params[self.target_kind]
        if self.target_kind == 'pid':
            if self.target <= 0:
                raise PipeworkError('%s: pid %r is not a process ID' % (self.label, self.target))
        else:
            v.check_not_option_like(self._opt(self.target_kind), self.target)
            if not self.target:
                raise PipeworkError('%s: %s is empty' % (self.label, self.target_kind))
        self.state = params.get('state') or 'present'
        self.ifname = v.check_ifname(self._opt('ifname'), params.get('ifname') or 'eth1')
        self.host_ifname = params.get('host_ifname')
        if self.host_ifname is not None:
            v.check_ifname(self._opt('host_ifname'), self.host_ifname)
        self.bridge = params.get('bridge')
        if self.bridge is not None:
            v.check_bridge_name(self._opt('bridge'), self.bridge)
        elif self.state == 'present':
            raise PipeworkError('%s: bridge is required with state=present' % self.label)
        self.bridge_type = params.get('bridge_type') or 'auto'
        self.datapath_type = params.get('datapath_type') or 'system'
        v.check_not_option_like(self._opt('datapath_type'), self.datapath_type)
        if not self.datapath_type.replace('-', '').replace('_', '').isalnum():
            raise PipeworkError('%s: datapath_type %r is not a datapath type name' % (self._opt('datapath_type'), self.datapath_type))
        self.bridge_address = None
        if params.get('bridge_address'):
            self.bridge_address = v.parse_interface(self._opt('bridge_address'), params['bridge_address'])
        self.addresses = None
        if params.get('address') is not None:
            self.addresses = [v.parse_interface(self._opt('address'), a) for a in params['address']]
            if len(set(self.addresses)) != len(self.addresses):
                raise PipeworkError('%s: address lists %s more than once' % (self._opt('address'), params['address']))
        self.gateway = None
        self.clear_gateway = False
        gateway = params.get('gateway')
        if gateway == '':
            self.clear_gateway = True
        elif gateway is not None:
            self.gateway = v.parse_ip(self._opt('gateway'), gateway)
            if self.addresses is not None:
                v.gateway_reachable(self._opt('gateway'), self.gateway, self.addresses)
        self.routes = None
        if params.get('routes') is not None:
            self.routes = []
            for r in params['routes']:
                dest = v.parse_network(self._opt('routes.dest'), r['dest'])
                if dest is None:
                    raise PipeworkError('%s: dest %r: use gateway for the default route' % (self._opt('routes'), r['dest']))
                via = v.parse_ip(self._opt('routes.via'), r['via']) if r.get('via') else None
                if via is not None and via.version != dest.version:
                    raise PipeworkError('%s: via %s is not of the family of %s' % (self._opt('routes'), via, dest))
                if via is not None and self.addresses is not None:
                    v.gateway_reachable(self._opt('routes.via'), via, self.addresses)
                self.routes.append((dest, via))
        self.mac = v.check_mac(self._opt('mac'), params['mac']) if params.get('mac') else None
        self.mtu = v.check_mtu(self._opt('mtu'), params['mtu']) if params.get('mtu') is not None else None
        self.vlan = None
        if params.get('vlan') is not None:
            self.vlan = params['vlan']
            if self.vlan != 0:
                v.check_vlan(self._opt('vlan'), self.vlan)
        if self.bridge_type == 'linux' and self.vlan:
            raise PipeworkError('%s: vlan %d needs an Open vSwitch bridge; %r is a Linux bridge'
                                % (self._opt('vlan'), self.vlan, self.bridge))
        # Filled in when the target is resolved.
        self.container = None  # docker_target.ContainerInfo
        self.identity = None   # stable key of the target: container ID or netns path/inode
        self.namespace = None  # netns.Namespace
        self.resolved_bridge_type = None

    def _opt(self, name):
        return '%s.%s' % (self.label, name) if self.index is not None else name

    opt = _opt

    def set_identity(self, identity):
        self.identity = identity
        if self.host_ifname is None:
            self.host_ifname = derive_host_ifname(identity, self.ifname)


def build_attachments(params):
    """Validate the module params and return the list of Attachments, top-level values as defaults."""
    for option in ('database_socket', 'docker_host'):
        v.check_not_option_like(option, params.get(option))
    top_target = [k for k in TARGET_KEYS if params.get(k) is not None]
    items = params.get('attachments')
    defaults = dict((k, params.get(k)) for k in ITEM_OPTIONS if k not in TARGET_KEYS)
    if items is not None:
        if top_target:
            raise PipeworkError('attachments: cannot be combined with a top-level %s' % top_target[0])
        merged = []
        for item in items:
            one = dict(defaults)
            one.update(dict((k, val) for k, val in item.items() if val is not None))
            merged.append(one)
        attachments = [Attachment(i, m) for i, m in enumerate(merged)]
    else:
        if not top_target:
            raise PipeworkError('give one of container, netns, pid, or a list of attachments')
        attachments = [Attachment(None, params)]
    return attachments


def check_batch(attachments):
    """Conflicts between items, once every host_ifname is known."""
    by_host = {}
    by_key = {}
    for a in attachments:
        other = by_host.get(a.host_ifname)
        if other is not None:
            raise PipeworkError('%s: host_ifname %r is also used by %s' % (a.opt('host_ifname'), a.host_ifname, other.label))
        by_host[a.host_ifname] = a
        key = (a.identity, a.ifname)
        other = by_key.get(key)
        if other is not None:
            raise PipeworkError('%s: %s %r already gets ifname %r in %s'
                                % (a.label, a.target_kind, a.target, a.ifname, other.label))
        by_key[key] = a
