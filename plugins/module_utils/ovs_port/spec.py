# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ovs_vlan_port's options: the argument spec, and module params turned into validated PortWants.

Top-level options other than ``port`` are defaults for every item of ``ports`` (an item's own value
wins, a dict such as ``external_ids`` included: it replaces the default, it is not merged). An option
left unset (None) is left unmanaged. Everything here is pure, so it is unit tested directly.
"""

from __future__ import annotations

import re

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.common import validation as v

VLAN_MODES = ('access', 'trunk', 'native-tagged', 'native-untagged')
STATES = ('present', 'absent')
# Keys and values are passed to ovs-vsctl quoted, so any printable text is safe; control characters are not.
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')

# Options a port item may carry; the same names are top-level defaults.
ITEM_OPTIONS = dict(
    port=dict(type='str'),
    bridge=dict(type='str'),
    tag=dict(type='int'),
    trunks=dict(type='list', elements='int'),
    vlan_mode=dict(type='str', choices=list(VLAN_MODES)),
    external_ids=dict(type='dict'),
    state=dict(type='str', choices=list(STATES)),
    datapath_type=dict(type='str'),
    force=dict(type='bool'),
)

ARGUMENT_SPEC = dict(ITEM_OPTIONS)
ARGUMENT_SPEC.update(
    ports=dict(type='list', elements='dict', options=ITEM_OPTIONS),
    database_socket=dict(type='str'),
    timeout=dict(type='int', default=30),
)

DEFAULT_DATAPATH_TYPE = 'system'


class PortWant:
    """One validated port as requested (the 'want'). None means 'leave this setting as it is'."""

    def __init__(self, index, params):
        self.index = index
        self.label = 'ports[%d]' % index if index is not None else 'ovs_vlan_port'
        self.params = params
        port = params.get('port')
        if port is None:
            raise PipeworkError('%s: port is required' % self.label)
        self.port = v.check_ifname(self.opt('port'), port)
        self.bridge = params.get('bridge')
        if self.bridge is not None:
            v.check_bridge_name(self.opt('bridge'), self.bridge)
        self.state = params.get('state') or 'present'
        if self.state not in STATES:
            raise PipeworkError('%s: state %r is not one of %s' % (self.opt('state'), self.state, ', '.join(STATES)))
        self.force = bool(params.get('force'))
        self.tag = check_tag(self.opt('tag'), params.get('tag'))
        self.trunks = check_trunks(self.opt('trunks'), params.get('trunks'))
        self.vlan_mode = params.get('vlan_mode')
        if self.vlan_mode is not None and self.vlan_mode not in VLAN_MODES:
            raise PipeworkError('%s: vlan_mode %r is not one of %s'
                                % (self.opt('vlan_mode'), self.vlan_mode, ', '.join(VLAN_MODES)))
        self.external_ids = check_external_ids(self.opt('external_ids'), params.get('external_ids'))
        self.datapath_type = params.get('datapath_type')
        if self.datapath_type is not None:
            check_datapath_type(self.opt('datapath_type'), self.datapath_type)
        if self.vlan_mode == 'access' and self.trunks:
            raise PipeworkError('%s: trunks %s cannot go with vlan_mode access (an access port carries only its tag); '
                                'use vlan_mode trunk, native-tagged or native-untagged'
                                % (self.opt('trunks'), self.trunks))
        if self.vlan_mode == 'trunk' and self.tag:
            raise PipeworkError('%s: tag %d cannot go with vlan_mode trunk (OVS ignores it); use vlan_mode '
                                'native-tagged or native-untagged for a native VLAN' % (self.opt('tag'), self.tag))

    def opt(self, name):
        return '%s.%s' % (self.label, name) if self.index is not None else name

    @property
    def datapath_explicit(self):
        return self.datapath_type is not None

    @property
    def manages_vlan(self):
        return self.tag is not None or self.trunks is not None or self.vlan_mode is not None


def check_tag(option, value):
    """0 clears the tag; otherwise 1-4094. Returns the int or None (unmanaged)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4094:
        raise PipeworkError('%s: VLAN tag %r is out of range (1-4094, or 0 to clear the tag)' % (option, value))
    return value


def check_trunks(option, value):
    """A list of VLANs 1-4094, each once; [] clears. Returns a sorted list or None (unmanaged)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise PipeworkError('%s: %r is not a list of VLANs' % (option, value))
    for vid in value:
        if isinstance(vid, bool) or not isinstance(vid, int) or not 1 <= vid <= 4094:
            raise PipeworkError('%s: VLAN %r is out of range (1-4094; [] clears the trunks)' % (option, vid))
    if len(set(value)) != len(value):
        raise PipeworkError('%s: %s lists a VLAN more than once' % (option, value))
    return sorted(value)


def check_external_ids(option, value):
    """Keys are identifiers; values become strings; None removes the key. Returns a dict or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PipeworkError('%s: %r is not a dict' % (option, value))
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key or _CONTROL.search(key):
            raise PipeworkError('%s: key %r is empty, not a string or contains control characters' % (option, key))
        if val is None:
            out[key] = None
        elif isinstance(val, bool):
            out[key] = 'true' if val else 'false'
        elif isinstance(val, (str, int, float)):
            out[key] = str(val)
            if _CONTROL.search(out[key]):
                raise PipeworkError('%s: value of %r contains control characters' % (option, key))
        else:
            raise PipeworkError('%s: value of %r is %r; give a string (or null to remove the key)' % (option, key, val))
    return out


def check_datapath_type(option, value):
    v.check_not_option_like(option, value)
    if not isinstance(value, str) or not value or not value.replace('-', '').replace('_', '').isalnum():
        raise PipeworkError('%s: datapath_type %r is not a datapath type name (for example system or netdev)'
                            % (option, value))
    return value


def build_ports(params):
    """Validate the module params; return the PortWants, top-level values as defaults for every item."""
    items = params.get('ports')
    if params.get('database_socket') is not None:
        v.check_not_option_like('database_socket', params['database_socket'])
        if not params['database_socket']:
            raise PipeworkError('database_socket: is empty')
    timeout = params.get('timeout')
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1):
        raise PipeworkError('timeout: %r is not a positive number of seconds' % (timeout,))
    if items is not None:
        if params.get('port') is not None:
            raise PipeworkError('ports: cannot be combined with a top-level port (%r); put it in the list'
                                % params['port'])
        defaults = dict((k, params.get(k)) for k in ITEM_OPTIONS if k != 'port')
        wants = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise PipeworkError('ports[%d]: %r is not a dict' % (i, item))
            merged = dict(defaults)
            merged.update(dict((k, val) for k, val in item.items() if val is not None))
            wants.append(PortWant(i, merged))
    else:
        if params.get('port') is None:
            raise PipeworkError('give port, or a list of ports')
        wants = [PortWant(None, params)]
    seen = {}
    for w in wants:
        other = seen.get(w.port)
        if other is not None:
            raise PipeworkError('%s: port %r is also given in %s' % (w.opt('port'), w.port, other.label))
        seen[w.port] = w
    return wants
