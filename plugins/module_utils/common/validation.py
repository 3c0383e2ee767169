# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of operator input. Every error names the option and the value, before anything changes."""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

IFNAMSIZ = 16  # the kernel's buffer, NUL included: names are 1-15 bytes
_MAC = re.compile(r'^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$')


def check_ifname(option, value):
    """Refuse what the kernel's dev_valid_name() refuses, and names a CLI would read as options."""
    if not isinstance(value, str) or not value:
        raise PipeworkError('%s: interface name %r is empty or not a string' % (option, value))
    raw = value.encode('utf-8')
    if len(raw) > IFNAMSIZ - 1:
        raise PipeworkError('%s: interface name %r is %d bytes; the kernel allows at most 15'
                            % (option, value, len(raw)))
    if value in ('.', '..'):
        raise PipeworkError('%s: interface name %r is not allowed by the kernel' % (option, value))
    if any(ch in value for ch in '/:') or any(ch.isspace() for ch in value):
        raise PipeworkError('%s: interface name %r contains "/", ":" or white space' % (option, value))
    if value.startswith('-'):
        raise PipeworkError('%s: interface name %r starts with "-" and would be read as an option' % (option, value))
    return value


def check_bridge_name(option, value):
    """Bridge names are interface names (OVS creates a same-named internal port)."""
    return check_ifname(option, value)


def parse_interface(option, value):
    """A CIDR with an explicit prefix, IPv4 or IPv6, as an ipaddress interface."""
    if not isinstance(value, str) or '/' not in value:
        raise PipeworkError('%s: %r is not an address in CIDR form (for example 192.168.0.1/24)' % (option, value))
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError as exc:
        raise PipeworkError('%s: %r is not a valid CIDR address (%s)' % (option, value, exc))
    if iface.ip == iface.network.network_address and iface.network.prefixlen < iface.max_prefixlen - 1:
        raise PipeworkError('%s: %r is a network address, not a host address' % (option, value))
    if iface.ip.is_multicast or iface.ip.is_unspecified:
        raise PipeworkError('%s: %r is not a unicast host address' % (option, value))
    return iface


def parse_network(option, value):
    """A route destination: a CIDR network, or 'default'."""
    if value == 'default':
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError) as exc:
        raise PipeworkError('%s: %r is not a network in CIDR form (%s)' % (option, value, exc))


def parse_ip(option, value):
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise PipeworkError('%s: %r is not an IP address' % (option, value))


def check_vlan(option, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4094:
        raise PipeworkError('%s: VLAN %r is out of range (1-4094)' % (option, value))
    return value


def check_mtu(option, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise PipeworkError('%s: MTU %r is out of range (68-65535)' % (option, value))
    return value


def check_mac(option, value):
    if not isinstance(value, str) or not _MAC.match(value):
        raise PipeworkError('%s: %r is not a MAC address (aa:bb:cc:dd:ee:ff)' % (option, value))
    if int(value[:2], 16) & 1:
        raise PipeworkError('%s: %r is a multicast MAC address' % (option, value))
    return value.lower()


def check_not_option_like(option, value):
    """Values passed to a CLI as arguments must not start with '-'."""
    if isinstance(value, str) and value.startswith('-'):
        raise PipeworkError('%s: %r starts with "-" and would be read as an option' % (option, value))
    return value


def gateway_reachable(option, gateway, interfaces):
    """A gateway must lie inside the subnet of one of the interface's addresses of its family."""
    same_family = [i for i in interfaces if i.version == gateway.version]
    if not same_family:
        raise PipeworkError('%s: gateway %s has no address of IPv%d on this interface'
                            % (option, gateway, gateway.version))
    if not any(gateway in i.network for i in same_family):
        raise PipeworkError('%s: gateway %s is outside the subnet of %s'
                            % (option, gateway, ', '.join(str(i) for i in same_family)))
    if any(gateway == i.ip for i in same_family):
        raise PipeworkError('%s: gateway %s is the interface\'s own address' % (option, gateway))
