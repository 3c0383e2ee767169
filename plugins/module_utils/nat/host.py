# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host settings a published port depends on, read and changed in the namespace the module runs in.

* forwarding: ``net.ipv4.ip_forward`` / ``net.ipv6.conf.all.forwarding`` (as Docker turns them on);
* ``net.ipv4.conf.IFACE.route_localnet`` on the interface toward a container that answers on 127.0.0.1
  (without it the kernel drops the DNATed packet as a martian);
* hairpin mode on the container's Linux bridge port: br_netfilter turns a DNAT back onto the bridge into
  a bridged frame, which the bridge sends out of the port it came in on only in hairpin mode.

Sysctls through /proc/sys (per network namespace), links through netlink.
"""

from __future__ import annotations

import os

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

PROC_SYS = '/proc/sys'


def forwarding_key(family):
    return 'net/ipv4/ip_forward' if family == 4 else 'net/ipv6/conf/all/forwarding'


def localnet_key(ifname):
    return 'net/ipv4/conf/%s/route_localnet' % ifname


def dotted(key):
    return key.replace('.', '\0').replace('/', '.').replace('\0', '/')


class Sysctl:
    def __init__(self, root=PROC_SYS):
        self.root = root

    def get(self, key):
        try:
            with open(os.path.join(self.root, key)) as handle:
                return handle.read().strip()
        except OSError:
            return None

    def set(self, key, value):
        try:
            with open(os.path.join(self.root, key), 'w') as handle:
                handle.write('%s\n' % value)
        except OSError as exc:
            raise PipeworkError('cannot set %s to %s: %s' % (dotted(key), value, exc.strerror))


def route_oif(ipr, ip):
    """Name of the interface the host routes ``ip`` through, or None."""
    try:
        routes = ipr.route('get', dst=ip)
    except Exception:  # pylint: disable=broad-except  # no route: nothing to set
        return None
    for msg in routes:
        oif = msg.get_attr('RTA_OIF')
        if oif:
            links = ipr.get_links(oif)
            if links:
                return links[0].get_attr('IFLA_IFNAME')
    return None


def set_hairpin(ipr, index, on=True):
    """Set a Linux bridge port's hairpin mode (IFLA_BRPORT_MODE) and read it back."""
    ipr.link('set', index=index, kind='bridge_slave', mode=1 if on else 0)
    link = ipr.get_links(index)[0]
    info = link.get_attr('IFLA_LINKINFO')
    slave = info.get_attr('IFLA_INFO_SLAVE_DATA') if info is not None else None
    if slave is None or bool(slave.get_attr('IFLA_BRPORT_MODE')) != on:
        raise PipeworkError('the kernel did not take hairpin mode on bridge port %s'
                            % link.get_attr('IFLA_IFNAME'))
