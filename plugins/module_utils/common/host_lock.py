# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host-level lock: two playbooks acting on one host at once take turns instead of racing.

Each module reads state, plans and applies under the lock, so a plan is never made from state that
another run is changing. The lock is an flock(2), released by the kernel if the process dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

LOCK_PATH = '/run/netplumb-pipework.lock'


@contextlib.contextmanager
def host_lock(timeout=300, path=LOCK_PATH):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise PipeworkError('another netplumb.pipework run held %s for more than %d s' % (path, timeout))
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
