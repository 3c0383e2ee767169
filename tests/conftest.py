"""Make the checkout importable as ``ansible_collections.netplumb.pipework`` for pytest.

Mirrors scripts/env.sh: the checkout is linked at
``.build/collections/ansible_collections/netplumb/pipework`` and ``.build/collections`` goes on
``sys.path`` (and on ANSIBLE_COLLECTIONS_PATH for tests that run ansible-playbook).
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'netplumb', 'pipework')


def _ensure_link():
    if os.path.isdir(os.path.join(LINK, 'plugins')):
        return
    if os.path.islink(LINK):
        os.unlink(LINK)  # dangling or pointing at a checkout that is gone
    if os.path.lexists(LINK):
        return  # a real directory (e.g. a copy) that we leave alone
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    try:
        os.symlink(REPO, LINK)
    except FileExistsError:  # another pytest process (xdist) won the race
        pass


def _ensure_sys_path():
    # When this checkout itself sits at .../ansible_collections/netplumb/pipework, its parent
    # tree is importable as is; otherwise use the .build/collections link.
    parts = REPO.split(os.sep)
    if parts[-3:-2] == ['ansible_collections']:
        root = os.sep.join(parts[:-3])
    else:
        _ensure_link()
        root = COLLECTIONS
    if root not in sys.path:
        sys.path.insert(0, root)
    paths = os.environ.get('ANSIBLE_COLLECTIONS_PATH', '')
    if root not in paths.split(os.pathsep):
        os.environ['ANSIBLE_COLLECTIONS_PATH'] = os.pathsep.join(p for p in (root, paths) if p)


_ensure_sys_path()
