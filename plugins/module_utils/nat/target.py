# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a mapping points: a container's address on an interface, or a fixed destination address.

A container is found with the Docker SDK (one inspect), its network namespace opened through
``/proc/PID/ns/net`` and read with one netlink socket created there by setns (no fork). The host end of
its veth is looked up in the namespace the module runs in: when it is a Linux bridge port, hairpin mode
is needed there for the container to reach its own published port through a host address.
"""

from __future__ import annotations

import ipaddress
import socket

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.docker import containers as docker_target
from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netns

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the target host
    IPRoute = None
    NetlinkError = OSError
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc

SCOPE_UNIVERSE = 0
IFA_F_DADFAILED = 0x08


class BridgePort:
    """The host end of a container's veth when it is a bridge port."""

    def __init__(self, index, name, bridge, bridge_kind, hairpin):
        self.index = index
        self.name = name
        self.bridge = bridge
        self.bridge_kind = bridge_kind
        self.hairpin = hairpin


class ResolvedTarget:
    """A target's handle and addresses: {family: ipaddress interface (address with its prefix)}."""

    def __init__(self, name, kind, addresses, port=None, container_id=None, missing=None):
        self.name = name
        self.kind = kind
        self.addresses = addresses
        self.port = port
        self.container_id = container_id
        self.missing = missing  # why the address is unknown (check mode before the container is wired)

    def address(self, family):
        return self.addresses.get(family)


def destination_target(label, value):
    """'10.0.0.5' (hairpin for that address) or '10.0.0.5/24' (hairpin for its subnet)."""
    try:
        if '/' in value:
            iface = ipaddress.ip_interface(value)
        else:
            ip = ipaddress.ip_address(value)
            iface = ipaddress.ip_interface('%s/%d' % (ip, ip.max_prefixlen))
    except ValueError:
        raise PipeworkError('%s: destination %r is not an IP address (or address/prefix)' % (label, value))
    if iface.ip.is_unspecified or iface.ip.is_multicast or iface.ip.is_loopback:
        raise PipeworkError('%s: destination %r is not a unicast address a container can have' % (label, value))
    return ResolvedTarget(str(iface.ip), 'destination', {iface.version: iface})


def _attr(msg, name, default=None):
    value = msg.get_attr(name)
    return default if value is None else value


def _first_global(ipr, index, family):
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    for msg in ipr.get_addr(index=index, family=af):
        if msg['scope'] != SCOPE_UNIVERSE:
            continue
        flags = _attr(msg, 'IFA_FLAGS', msg['flags'])
        if flags & IFA_F_DADFAILED:
            continue
        ip = _attr(msg, 'IFA_ADDRESS')
        return ipaddress.ip_interface('%s/%d' % (ip, msg['prefixlen']))
    return None


def bridge_port_of(host_ipr, peer_index, container_index):
    """The host end (``peer_index`` in this namespace) of a container veth, if it is a bridge port."""
    if not peer_index:
        return None
    try:
        link = host_ipr.get_links(peer_index)[0]
    except (OSError, IndexError, NetlinkError):
        return None  # the peer lives in another namespace
    info = link.get_attr('IFLA_LINKINFO')
    kind = info.get_attr('IFLA_INFO_KIND') if info is not None else None
    if kind != 'veth' or link.get_attr('IFLA_LINK') != container_index:
        return None  # an index that happens to exist here but is not our peer
    master = link.get_attr('IFLA_MASTER')
    if not master:
        return None
    bridge = host_ipr.get_links(master)[0]
    binfo = bridge.get_attr('IFLA_LINKINFO')
    bkind = binfo.get_attr('IFLA_INFO_KIND') if binfo is not None else None
    hairpin = None
    slave = info.get_attr('IFLA_INFO_SLAVE_DATA')
    if bkind == 'bridge' and slave is not None:
        hairpin = bool(slave.get_attr('IFLA_BRPORT_MODE'))
    return BridgePort(peer_index, link.get_attr('IFLA_IFNAME'), bridge.get_attr('IFLA_IFNAME'), bkind, hairpin)


class ContainerResolver:
    """Resolves container targets with one Docker client and one host netlink socket per run."""

    def __init__(self, docker_host=None, timeout=30, iproute_factory=None):
        self.client = docker_target.DockerClient(docker_host, timeout=timeout)
        self.iproute_factory = iproute_factory or IPRoute
        self._host_ipr = None

    def host_ipr(self):
        if self._host_ipr is None:
            self._host_ipr = self._iproute(None)
        return self._host_ipr

    def _iproute(self, namespace):
        if self.iproute_factory is None:
            raise PipeworkError('pyroute2 is missing on the target host (pip or apt package "pyroute2" / '
                                '"python3-pyroute2"): %s' % PYROUTE2_IMPORT_ERROR)
        return netns.iproute_in(namespace, self.iproute_factory)

    def exists(self, label, name):
        return self.client.inspect(name) is not None

    def resolve(self, label, name, ifname, families, tolerate_missing=False):
        """The container's first global address per family on ``ifname``, and its bridge port."""
        info = docker_target.require_running('%s: container' % label, name, self.client.inspect(name))
        namespace = netns.Namespace(info.netns_path, '%s: container %s' % (label, name))
        ipr = None
        try:
            ipr = self._iproute(namespace)
            indexes = ipr.link_lookup(ifname=ifname)
            if not indexes:
                why = '%s: container %r has no interface %r (attach it first, for example with ' \
                      'netplumb.pipework.docker_veth)' % (label, name, ifname)
                if tolerate_missing:
                    return ResolvedTarget(name, 'container', {}, container_id=info.id, missing=why)
                raise PipeworkError(why)
            index = indexes[0]
            addresses = {}
            for family in families:
                iface = _first_global(ipr, index, family)
                if iface is None:
                    why = '%s: container %r has no global IPv%d address on %s' % (label, name, family, ifname)
                    if tolerate_missing:
                        return ResolvedTarget(name, 'container', {}, container_id=info.id, missing=why)
                    raise PipeworkError(why)
                addresses[family] = iface
            link = ipr.get_links(index)[0]
            peer = link.get_attr('IFLA_LINK')
        finally:
            if ipr is not None:
                ipr.close()
            namespace.close()
        port = bridge_port_of(self.host_ipr(), peer, index)
        return ResolvedTarget(name, 'container', addresses, port=port, container_id=info.id)

    def close(self):
        self.client.close()
        if self._host_ipr is not None:
            self._host_ipr.close()
            self._host_ipr = None
