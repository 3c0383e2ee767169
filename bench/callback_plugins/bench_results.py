# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark helper: write each task's per-host outcome (changed, failed, msg, the module's `elapsed`) and
each task's wall time to the JSON file named by $NP_BENCH_RESULTS. Adds no task to the play it measures."""

from __future__ import annotations

DOCUMENTATION = r'''
name: bench_results
type: notification
short_description: Record task results and timings for bench/run.py
description: Writes task timings and per-host results to the file named by NP_BENCH_RESULTS.
requirements:
  - NP_BENCH_RESULTS set in the environment
'''

import functools
import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'bench_results'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.started = time.monotonic()
        self.tasks = []
        self.results = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.tasks.append({'name': task.get_name(), 'start': round(time.monotonic() - self.started, 4)})

    def _record(self, result, status, ignore_errors=False):  # pylint: disable=unused-argument
        r = result._result
        entry = {'host': result._host.get_name(), 'task': result._task.get_name(), 'status': status,
                 'changed': bool(r.get('changed')), 'end': round(time.monotonic() - self.started, 4)}
        if 'elapsed' in r and isinstance(r.get('elapsed'), (int, float)):
            entry['elapsed'] = r['elapsed']
        if 'results' in r:  # a loop: per-item module times
            entry['items'] = len(r['results'])
            entry['item_elapsed'] = [i.get('elapsed') for i in r['results'] if isinstance(i, dict)]
            entry['item_changed'] = sum(1 for i in r['results'] if isinstance(i, dict) and i.get('changed'))
        if status != 'ok':
            entry['msg'] = str(r.get('msg', ''))[:2000]
        self.results.append(entry)

    # One recorder for the four outcomes (Ansible passes ignore_errors= to on_failed only).
    v2_runner_on_ok = functools.partialmethod(_record, status='ok')
    v2_runner_on_failed = functools.partialmethod(_record, status='failed')
    v2_runner_on_unreachable = functools.partialmethod(_record, status='unreachable')
    v2_runner_on_skipped = functools.partialmethod(_record, status='skipped')

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('NP_BENCH_RESULTS')
        if not path:
            return
        with open(path, 'w') as f:
            json.dump({'tasks': self.tasks, 'results': self.results,
                       'total': round(time.monotonic() - self.started, 4)}, f)
