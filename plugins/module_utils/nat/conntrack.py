# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flush the conntrack entries of UDP host ports whose mapping was added, changed or removed.

A UDP "flow" keeps its conntrack entry (and with it the old DNAT decision, or none) for as long as
packets keep coming, so without a flush a remapped port black-holes until the sender pauses for the
UDP timeout. kube-proxy does the same (``conntrack -D -p udp --dport PORT``). Argument lists, no shell.
"""

from __future__ import annotations


def flush_argv(conntrack, family, port):
    argv = [conntrack, '-D', '-p', 'udp', '--orig-port-dst', str(port)]
    if family == 6:
        argv[1:1] = ['-f', 'ipv6']
    return argv


def flush(run, conntrack, ports):
    """Run one flush per (family, port); returns (flushed descriptions, warnings).

    ``conntrack -D`` exits 1 when no entry matched ("0 flow entries have been deleted"): not an error.
    """
    done = []
    warnings = []
    if not ports:
        return done, warnings
    if not conntrack:
        warnings.append('conntrack (conntrack-tools) is not installed: UDP flows to host ports %s keep their old '
                        'NAT state until they time out' % ', '.join(str(p) for f, p in ports))
        return done, warnings
    for family, port in ports:
        rc, out, err = run(flush_argv(conntrack, family, port))
        text = (err or '') + (out or '')
        if rc == 0 or (rc == 1 and 'flow entries have been deleted' in text):
            done.append('IPv%d udp/%d' % (family, port))
        else:
            warnings.append('conntrack could not flush UDP port %d (IPv%d): %s' % (port, family, text.strip()))
    return done, warnings
