"""Without pyroute2 or the Docker SDK on the target, each runner fails with a message saying what to install.

(A module that dies with NameError tells an operator nothing.) Each case runs in a fresh interpreter where
importing the library fails, as on a host that lacks the package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BLOCK = "import sys; sys.modules['pyroute2'] = None; sys.modules['pyroute2.netlink.exceptions'] = None\n"

CASES = {
    'docker_veth': (
        "from ansible_collections.netplumb.pipework.plugins.module_utils.veth.apply import Runner\n"
        "Runner({'netns': 'x', 'bridge': 'br0'}, False, None).run()\n"),
    'ovs_vlan_port': (
        "from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port import apply as m\n"
        "assert not m.HAS_PYROUTE2 and m.IPRoute is None\n"
        "raise m.PipeworkError('pyroute2 is missing: %s' % m.PYROUTE2_IMPORT_ERROR)\n"),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_missing_pyroute2_is_reported_not_a_name_error(name):
    code = BLOCK + (
        "from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError\n"
        "import json\ntry:\n" + ''.join('    ' + line + '\n' for line in CASES[name].splitlines())
        + "except PipeworkError as exc:\n    print(json.dumps({'msg': exc.msg}))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # this test's collection path
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    msg = json.loads(proc.stdout.strip().splitlines()[-1])['msg']
    assert 'pyroute2 is missing' in msg
