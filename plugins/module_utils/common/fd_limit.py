# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make room for the file descriptors a large batch holds at once.

A batch keeps one namespace handle and two netlink sockets per target namespace until it is done (so that
it can roll back): pyroute2's IPRoute for changes, 3 (0.7) or 4 (0.9: its event loop's epoll and wake-up
pipe) descriptors, and the raw socket of netlink_dump.py for dumps, so a target costs up to six (measured:
5 with 0.7, 6 with 0.9). The common soft limit of 1024 stops a task at about 150 targets while the hard
limit is far higher: raise the soft limit of this process only, as far as the batch needs, and refuse up
front (before any change) when even the hard limit is too low.
"""

from __future__ import annotations

try:
    import resource
except ImportError:  # pragma: no cover - not on Linux
    resource = None

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

PER_TARGET = 7   # namespace handle + an IPRoute (3-4 descriptors) + a raw netlink socket, with room to spare
SPARE = 128      # host sockets, Docker API, ovs-vsctl pipes, Python's own files


def needed(targets):
    return targets * PER_TARGET + SPARE


def ensure_open_files(targets, option='attachments'):
    """Raise RLIMIT_NOFILE's soft limit to fit ``targets`` namespaces; returns the soft limit in force."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed(targets)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        raise PipeworkError('%s: %d target namespaces need about %d open files and the hard limit of this '
                            'process is %d (ulimit -Hn); split the task or raise the limit'
                            % (option, targets, want, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want
