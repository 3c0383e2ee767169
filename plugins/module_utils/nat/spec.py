# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nat_portmap's options: the argument spec, and module params turned into validated requests.

Top-level target options are defaults for every item of ``targets``; an item's own value wins.
Pure code (no kernel, no Docker): everything here fails before anything changes, naming the option,
the item and the value.
"""

from __future__ import annotations

import re

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.common import validation as v
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.model import MasqEntry
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.target import destination_target
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.port_spec import parse_publish_list

IP_VERSIONS = {'ipv4': (4,), 'ipv6': (6,), 'both': (4, 6)}
# Docker's own rule for container names; also keeps the rule comments free of quotes and spaces.
_CONTAINER_NAME = re.compile(r'^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$')

TARGET_OPTIONS = dict(
    container=dict(type='str'),
    destination=dict(type='str'),
    ifname=dict(type='str'),
    publish=dict(type='list', elements='str'),
    localhost=dict(type='bool'),
    exclusive=dict(type='bool'),
    ip_version=dict(type='str', choices=list(IP_VERSIONS)),
    state=dict(type='str', choices=['present', 'absent']),
)

DEFAULTS = dict(ifname='eth1', localhost=False, exclusive=False, ip_version='ipv4', state='present')

ARGUMENT_SPEC = dict(TARGET_OPTIONS)
ARGUMENT_SPEC.update(
    targets=dict(type='list', elements='dict', options=TARGET_OPTIONS),
    masquerade=dict(type='list', elements='str'),
    bridge=dict(type='str'),
    isolate=dict(type='bool'),
    docker_host=dict(type='str'),
    timeout=dict(type='int', default=30),
)


class TargetItem:
    """One target as requested: its handle, what to publish, how."""

    def __init__(self, label, params):
        self.label = label
        kinds = [k for k in ('container', 'destination') if params.get(k) not in (None, '')]
        if len(kinds) != 1:
            raise PipeworkError('%s: give exactly one of container or destination (got %s)'
                                % (label, ', '.join(kinds) or 'none'))
        self.kind = kinds[0]
        value = params[self.kind]
        self.state = params['state']
        self.exclusive = params['exclusive']
        self.localhost = params['localhost']
        self.families = IP_VERSIONS[params['ip_version']]
        self.ifname = v.check_ifname('%s: ifname' % label, params['ifname'])
        self.resolved = None
        if self.kind == 'container':
            if not _CONTAINER_NAME.match(value):
                raise PipeworkError('%s: container %r is not a Docker container name or ID' % (label, value))
            self.name = value.lstrip('/')
        else:
            self.resolved = destination_target(label, value)
            self.name = self.resolved.name
            fam = next(iter(self.resolved.addresses))
            if self.state == 'present' and fam not in self.families:
                raise PipeworkError('%s: destination %s is IPv%d but ip_version is %s'
                                    % (label, value, fam, params['ip_version']))
        self.publish = list(params.get('publish') or [])
        try:
            self.requests = parse_publish_list(self.publish)
        except PipeworkError as exc:
            raise PipeworkError('%s: %s' % (label, exc.msg), **exc.details)
        for req in self.requests:
            if self.state == 'present' and req.family is not None and req.family not in self.families:
                raise PipeworkError('%s: publish %r has an IPv%d host address but ip_version is %s'
                                    % (label, req.spec, req.family, params['ip_version']), spec=req.spec)
            if req.host_ip is not None and req.family == 4 and req.host_ip.startswith('127.') \
                    and self.state == 'present' and not self.localhost:
                raise PipeworkError('%s: publish %r answers on a loopback address, which needs localhost: true '
                                    '(it turns on route_localnet and the 127.0.0.0/8 guard)'
                                    % (label, req.spec), spec=req.spec)
        if self.state == 'present' and self.kind == 'destination':
            for req in self.requests:
                fam = req.family or next(iter(self.resolved.addresses))
                if fam not in self.resolved.addresses:
                    raise PipeworkError('%s: publish %r is IPv%d but destination %s is not'
                                        % (label, req.spec, fam, value), spec=req.spec)


def build(params):
    """(target items, masquerade entries, state, isolate, bridge) from module params."""
    items = []
    top = dict((k, params.get(k)) for k in TARGET_OPTIONS)
    for key, default in DEFAULTS.items():
        if top.get(key) is None:
            top[key] = default
    if params.get('targets'):
        if top.get('container') or top.get('destination'):
            raise PipeworkError('targets: give targets, or a top-level container/destination, not both')
        for i, raw in enumerate(params['targets']):
            merged = dict(top)
            for key, value in (raw or {}).items():
                if value is not None:
                    merged[key] = value
            items.append(TargetItem('targets[%d]' % i, merged))
    elif top.get('container') or top.get('destination'):
        items.append(TargetItem('nat_portmap', top))
    elif params.get('publish'):
        raise PipeworkError('publish: give a container or a destination to publish to')

    seen = {}
    for item in items:
        if item.name in seen:
            raise PipeworkError('%s: target %r is already given in %s; list each target once'
                                % (item.label, item.name, seen[item.name]))
        seen[item.name] = item.label

    bridge = params.get('bridge')
    if bridge is not None:
        v.check_bridge_name('bridge', bridge)
    masquerade = []
    for cidr in params.get('masquerade') or []:
        if bridge is None:
            raise PipeworkError('masquerade: %r needs bridge (traffic leaving through any interface but that '
                                'bridge is masqueraded)' % cidr)
        net = v.parse_network('masquerade', cidr)
        if net is None:
            raise PipeworkError('masquerade: %r is not a source network in CIDR form' % cidr)
        masquerade.append(MasqEntry(str(net), bridge))
    state = top['state']
    return items, masquerade, state, params.get('isolate'), bridge
