# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way every module of the collection turns a runner's outcome into Ansible's result.

Runners raise PipeworkError (an operator-facing message plus details) and return a dict with ``diff`` and
``warnings``; this is where that becomes fail_json / exit_json, the same for every module.
"""

from __future__ import annotations

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError


def run_and_exit(module, runner):
    """Run ``runner.run()`` and end the module with its result (diff only in diff mode) or its error."""
    try:
        result = runner.run()
    except PipeworkError as exc:
        # What the runner warned about before it failed (e.g. a revert that ran) matters most now.
        for warning in getattr(runner, 'warnings', None) or []:
            module.warn(warning)
        module.fail_json(msg=exc.msg, **exc.details)
    diff = result.pop('diff')
    if module._diff:  # pylint: disable=protected-access  # AnsibleModule has no public accessor for it
        result['diff'] = diff
    for warning in result.pop('warnings'):
        module.warn(warning)
    module.exit_json(**result)
