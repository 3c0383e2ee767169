"""Read one network namespace twice, with pyroute2 and with the raw reader, and print both as JSON.

Run as a script by test_raw_netlink_reads.py with each Python under test (Debian's /usr/bin/python3 has
pyroute2 0.7, the venv 0.9):  python netlink_compare.py /run/netns/NAME
The collection must be importable (PYTHONPATH holds the directory that contains ansible_collections/).
"""

from __future__ import annotations

import ipaddress
import json
import sys

import pyroute2
from pyroute2 import IPRoute

from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netlink_dump
from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netns
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import read_links, read_namespace

IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network,
            ipaddress.IPv4Interface, ipaddress.IPv6Interface)


def encode(value):
    """JSON that keeps the value types apart: ipaddress objects tagged with their class, bools as bools."""
    if isinstance(value, IP_TYPES):
        return {'class': type(value).__name__, 'text': str(value)}
    if isinstance(value, dict):
        return dict((k, encode(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return {'class': type(value).__name__, 'repr': repr(value)}


def state_of(ns):
    return {'links': sorted(ns.by_index.values(), key=lambda ln: ln['index']),
            'addrs': [a for index in sorted(ns.addrs) for a in ns.addrs[index]],
            'routes': ns.routes}


def main():
    namespace = netns.Namespace(sys.argv[1], 'netns')
    ipr = netns.iproute_in(namespace, IPRoute)
    raw = netns.iproute_in(namespace, netlink_dump.RawReader)
    try:
        out = {
            'pyroute2_version': getattr(pyroute2, '__version__', 'unknown'),
            'pyroute2': state_of(read_namespace(ipr)),
            'raw': state_of(read_namespace(None, raw=raw)),
            'raw_links_only': read_links(None, raw=raw),
        }
    finally:
        raw.close()
        ipr.close()
        namespace.close()
    json.dump(encode(out), sys.stdout)


if __name__ == '__main__':
    main()
