# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper for tests/integration/reliability: after each bad-input case of the playbook, snapshot the host.

A task named ``case:ID`` opens a case; every result until the next case opens is recorded for it (a role
case fails inside the role). When the next case opens (or the playbook ends) the host is snapshotted
(relsnap.snapshot) in the controller process, which runs in the test's host namespace; the task named
``baseline`` takes the first snapshot. The linear strategy handles all results of a task before it starts
the next task, so each snapshot sits exactly between two cases: one playbook run tests every case, without
an extra task or process per snapshot.
"""

from __future__ import annotations

DOCUMENTATION = r'''
name: np_case_snapshots
type: notification
short_description: Host snapshots between the cases of the reliability bad-input playbook
description: Writes per-case results and host snapshots to the JSON file named by NP_CASES_OUT.
requirements:
  - NP_CASES_OUT, NP_SNAP_BRIDGE, NP_SNAP_WATCH (JSON list), NETPLUMB_STATE_DIR in the environment
'''

import json
import os
import sys
import time

from ansible.plugins.callback import CallbackBase

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import relsnap  # noqa: E402 pylint: disable=wrong-import-position


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'np_case_snapshots'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.out_path = os.environ.get('NP_CASES_OUT')
        self.bridge = os.environ.get('NP_SNAP_BRIDGE')
        self.watch = json.loads(os.environ.get('NP_SNAP_WATCH') or '[]')
        self.state_dir = os.environ.get('NETPLUMB_STATE_DIR')
        self.current = None
        self.data = {'baseline': None, 'cases': {}, 'order': [], 'setup': []}
        self.started = time.monotonic()

    def _snap(self):
        return relsnap.snapshot(self.bridge, self.watch, self.state_dir)

    def _save(self):
        if self.out_path:
            tmp = self.out_path + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(self.data, f)
            os.rename(tmp, self.out_path)

    def _close(self):
        if self.current is not None:
            case = self.data['cases'][self.current]
            case['after'] = self._snap()
            case['ended'] = round(time.monotonic() - self.started, 3)
            self.current = None
            self._save()

    def v2_playbook_on_task_start(self, task, is_conditional):
        name = task.get_name()
        if name.startswith('case:'):
            self._close()
            self.current = name[len('case:'):]
            self.data['order'].append(self.current)
            self.data['cases'][self.current] = {'results': [], 'started': round(time.monotonic() - self.started, 3)}

    def _record(self, result, status):
        name = result._task.get_name()
        res = dict(result._result)
        if name == 'baseline':
            self.data['baseline'] = self._snap()
            self._save()
            return
        entry = {'task': name, 'status': status, 'changed': bool(res.get('changed')),
                 'msg': str(res.get('msg', ''))[:4000]}
        if 'argument_errors' in res:
            entry['argument_errors'] = [str(e) for e in res['argument_errors']]
        if self.current is None:
            if status != 'ok':
                self.data['setup'].append(entry)
            return
        self.data['cases'][self.current]['results'].append(entry)

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'failed')

    def v2_runner_on_unreachable(self, result):
        self._record(result, 'unreachable')

    def v2_runner_on_skipped(self, result):
        if self.current is not None:
            self.data['cases'][self.current]['results'].append(
                {'task': result._task.get_name(), 'status': 'skipped', 'changed': False, 'msg': ''})

    def v2_playbook_on_stats(self, stats):
        self._close()
        self._save()
