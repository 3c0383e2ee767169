# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Network namespaces without a fork per namespace.

pyroute2's own netns support forks a helper process per socket. A netlink socket keeps the namespace it
was created in, so it is enough to enter the namespace with setns(2) in this thread, open the socket
and come straight back: one socket per namespace, no process per item.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = '/run/netns'

_libc = None


def _setns(fd):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name_or_path):
    """A netns option: a name under /run/netns, or an absolute path."""
    if name_or_path.startswith('/'):
        return name_or_path
    return os.path.join(NETNS_RUN_DIR, name_or_path)


class Namespace:
    """An open handle on a network namespace; ``identity`` is (device, inode) of the nsfs file."""

    def __init__(self, path, label):
        self.path = path
        self.label = label
        try:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
        except OSError as exc:
            raise PipeworkError('%s: cannot open network namespace %s: %s' % (label, path, exc.strerror))
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def current_identity():
    st = os.stat('/proc/self/ns/net')
    return (st.st_dev, st.st_ino)


@contextlib.contextmanager
def entered(namespace):
    """Run the body inside ``namespace`` (this thread only), then return to where we were."""
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    try:
        _setns(namespace.fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def iproute_in(namespace, iproute_factory):
    """An IPRoute whose socket lives in ``namespace`` (None: this namespace)."""
    if namespace is None:
        return iproute_factory()
    try:
        with entered(namespace):
            return iproute_factory()
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise PipeworkError('entering network namespace %s needs root (CAP_SYS_ADMIN)' % namespace.path)
        raise
