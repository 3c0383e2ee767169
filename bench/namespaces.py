"""Make sockets inside other network namespaces without a fork: the one setns(2) helper of bench/.

floor.py (its container-side sockets), hostops.py (an IPRoute per container for reset and verify) and
components.py (the namespace-read timings) all enter namespaces through this file. setns(2) moves only
the calling thread, and a netlink socket keeps the namespace it was created in, so a caller enters, makes
its socket(s) and comes straight back: per visit one open of /proc/thread-self/ns/net and one setns per
namespace plus one back, a few microseconds each. Stdlib only, like floor.py, which must not run the
module's own code (plugins/module_utils/linux/netns.py is the module's equivalent).
"""

import ctypes
import ctypes.util
import os

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True)


def setns(fd):
    """Move this thread into the network namespace open as fd."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_netns(pid):
    """An fd on process pid's network namespace (close it when done)."""
    return os.open('/proc/%d/ns/net' % pid, os.O_RDONLY | os.O_CLOEXEC)


def made_in(ns_fds, factory):
    """[factory() called inside each namespace of ns_fds], in order.

    The thread goes from one namespace straight to the next and home once, at the end (also on error).
    """
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY | os.O_CLOEXEC)
    made = []
    try:
        for fd in ns_fds:
            setns(fd)
            made.append(factory())
    finally:
        setns(home)
        os.close(home)
    return made


def made_in_pid(pid, factory):
    """factory() called inside process pid's network namespace (e.g. pyroute2's IPRoute)."""
    fd = open_netns(pid)
    try:
        return made_in([fd], factory)[0]
    finally:
        os.close(fd)
