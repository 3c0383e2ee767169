# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_bridge_migrate: want / have / plan / apply, with a commit-confirmed revert.

state=present: read the host (bridge_migrate_snapshot), plan (bridge_migrate_plan), save the uplink's
original state in a record, arm the detached revert (rollback.py), apply (bridge_migrate_apply), read back,
probe. A failed change or probe reverts at once. ``confirm: true`` cancels an armed revert.
state=absent: put the uplink back as the record says and remove the bridge's copies; the bridge stays.
Everything runs under host_lock, which the revert process takes too.
"""

from __future__ import annotations

import binascii
import json
import os
import time

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.common import validation
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netns
from ansible_collections.netplumb.pipework.plugins.module_utils.common import host_lock
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import revert as rollback
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import plan as planner
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import snapshot
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import executor as applier

try:
    from pyroute2 import IPRoute
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the target host
    IPRoute = None
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc

ARGUMENT_SPEC = dict(
    uplink=dict(type='str', required=True),
    bridge=dict(type='str', required=True),
    bridge_type=dict(type='str', default='auto', choices=['auto', 'linux', 'ovs']),
    datapath_type=dict(type='str', default='system', choices=['system', 'netdev']),
    state=dict(type='str', default='present', choices=['present', 'absent']),
    rollback_timeout=dict(type='int', default=120),
    probe=dict(type='str'),
    probe_timeout=dict(type='int', default=10),
    confirm=dict(type='bool', default=False),
    database_socket=dict(type='str'),
)

PROBE_INTERVAL = 0.5


def new_token():
    return binascii.hexlify(os.urandom(16)).decode('ascii')


class Runner:
    def __init__(self, params, check_mode, run_command, get_bin_path, iproute_factory=None,
                 state_dir=rollback.STATE_DIR, lock_path=host_lock.LOCK_PATH, python=None):
        self.p = params
        self.check_mode = check_mode
        self._run_command = run_command
        self.get_bin_path = get_bin_path
        self.iproute_factory = iproute_factory or IPRoute
        self.state_dir = state_dir
        self.lock_path = lock_path
        self.python = python
        self.warnings = []

    # ---- plumbing ----
    def run_argv(self, argv):
        rc, out, err = self._run_command(argv)
        return rc, out or '', err or ''

    def _validate(self):
        p = self.p
        validation.check_ifname('uplink', p['uplink'])
        validation.check_bridge_name('bridge', p['bridge'])
        if p['uplink'] == p['bridge']:
            raise PipeworkError('bridge: %r is also the uplink; name the bridge the uplink goes into' % p['bridge'])
        if p['rollback_timeout'] < 0:
            raise PipeworkError('rollback_timeout: %r is negative (0 disables the revert)' % p['rollback_timeout'])
        if p['probe_timeout'] < 1:
            raise PipeworkError('probe_timeout: %r must be at least 1 second' % p['probe_timeout'])
        if p.get('probe'):
            validation.parse_ip('probe', p['probe'])
        if p.get('database_socket') is not None:
            validation.check_not_option_like('database_socket', p['database_socket'])
        if p['confirm'] and p['state'] == 'absent':
            raise PipeworkError('confirm: applies to state=present (a migration waiting for confirmation); '
                                'state=absent needs no confirmation')

    def run(self):
        self._validate()
        if not HAS_PYROUTE2 and self.iproute_factory is None:
            raise PipeworkError('pyroute2 is missing on the target host (apt python3-pyroute2 or pip pyroute2): %s'
                                % PYROUTE2_IMPORT_ERROR)
        self.ip = self.get_bin_path('ip')
        if not self.ip:
            raise PipeworkError('the ip command (iproute2) is missing on the target host')
        self.ovs_vsctl = self.get_bin_path('ovs-vsctl')
        self.vsctl = ovsdb.Vsctl(self.run_argv, self.p.get('database_socket')) if self.ovs_vsctl else None
        with host_lock.host_lock(path=self.lock_path):
            ipr = netns.iproute_in(None, self.iproute_factory)
            try:
                self.ipr = ipr
                return self._run_locked()
            finally:
                ipr.close()

    def _read(self):
        ovs_state, ovs_error = None, None
        if self.vsctl is not None:
            try:
                ovs_state = self.vsctl.read_state()
            except PipeworkError as exc:
                ovs_error = exc.msg
        return snapshot.read_view(self.ipr, self.p['uplink'], self.p['bridge'], self.p['bridge_type'],
                                  ovs_state, ovs_error, state=self.p['state'])

    def _link_exists(self, name):
        return bool(self.ipr.link_lookup(ifname=name))

    def _executor(self, view):
        return applier.Executor(self.run_argv, self.ip, self.vsctl, self.p['uplink'], self.p['bridge'],
                                view['bridge_type'], self._link_exists)

    def _describe(self, action):
        return planner.describe(action, self.p['uplink'], self.p['bridge'])

    # ---- the record ----
    def _load_record(self, view):
        self.record_file = rollback.record_path(netns.current_identity()[1], self.p['uplink'], self.state_dir)
        record = rollback.load_record(self.record_file)
        if record is None:
            return None
        orig_mac = (record.get('original') or {}).get('mac') or ''
        if orig_mac.lower() != (view['uplink']['mac'] or '').lower():
            self.warnings.append('ignored the snapshot %s: it describes an uplink with MAC %s, %s has %s now'
                                 % (self.record_file, orig_mac, self.p['uplink'], view['uplink']['mac']))
            return None
        return record

    def _rollback_info(self, record, status=None):
        if record is None:
            return {'status': status or 'none', 'token': None, 'pid': None, 'timeout': None, 'deadline': None,
                    'snapshot': None, 'reason': None}
        return {'status': status or record.get('status'), 'token': record.get('token'), 'pid': record.get('pid'),
                'timeout': record.get('timeout'), 'deadline': record.get('deadline'),
                'snapshot': self.record_file, 'reason': record.get('reason')}

    def _armed_alive(self, record):
        return bool(record and record.get('status') == rollback.ARMED
                    and rollback.is_revert_process(record.get('pid'), record.get('token')))

    def _result(self, view, actions, after, record, status=None, token=None, probe=None, changed=None):
        side = 'bridge' if self.p['state'] == 'present' else 'uplink'
        moved_addresses = [planner.cidr(a['addr']) for a in actions if a['op'] == 'add_address']
        rename = {self.p['uplink']: self.p['bridge']}
        moved_routes = [planner.describe_route(a['route'], rename if a['direction'] == 'to_bridge' else None)
                        for a in actions if a['op'] == 'move_route']
        info = self._rollback_info(record, status)
        return {
            'changed': bool(actions) if changed is None else changed,
            'uplink': self.p['uplink'],
            'bridge': self.p['bridge'],
            'bridge_type': view['bridge_type'],
            'state': self.p['state'],
            'actions': [self._describe(a) for a in actions],
            'addresses': after[side]['addresses'],
            'routes': after[side]['routes'],
            'moved_addresses': moved_addresses,
            'moved_routes': moved_routes,
            'token': info['token'],
            'rollback': info,
            'probe': probe or {'address': None, 'result': 'not_run', 'detail': None},
            'diff': {'before': self._before, 'after': after},
            'warnings': self.warnings,
        }

    # ---- main flow ----
    def _run_locked(self):
        view, skipped = self._read()
        self._before = planner.summary(view)
        record = self._load_record(view)
        if record is not None and record.get('bridge') != self.p['bridge']:
            if self._armed_alive(record) and self.p['state'] == 'present':
                raise PipeworkError('bridge: a migration of %s into %s is waiting for confirmation (token %s); '
                                    'confirm it or let it revert before using %s'
                                    % (self.p['uplink'], record.get('bridge'), record.get('token'), self.p['bridge']))
            record = None
        if self.p['state'] == 'absent':
            return self._absent(view, record)
        if self.p['confirm']:
            return self._confirm(view, record)
        return self._present(view, record, skipped)

    def _present(self, view, record, skipped):
        actions = planner.plan_present(view, self.p['datapath_type'])
        timeout = self.p['rollback_timeout']
        if not actions:
            after = planner.simulate(self._before, [])
            status = None
            if record is not None and record.get('status') == rollback.ARMED and not self._armed_alive(record):
                self.warnings.append('the revert armed with token %s (pid %s) is not running any more; confirm to '
                                     'record the migration as final' % (record.get('token'), record.get('pid')))
            return self._result(view, [], after, record, status=status)
        after = planner.simulate(self._before, actions)
        if self.check_mode:
            return self._result(view, actions, after, None, status='would_arm' if timeout else 'disabled')

        previous = None
        if record is not None and record.get('status') in (rollback.ARMED, rollback.CONFIRMED, rollback.UNARMED):
            previous = record
        original = planner.original_state(view, previous['original'] if previous else None)
        self.warnings.extend(self._warnings(view, skipped))
        token = new_token()
        now = time.time()
        new = {
            'version': rollback.RECORD_VERSION,
            'token': token,
            'status': rollback.ARMED if timeout else rollback.UNARMED,
            'uplink': self.p['uplink'],
            'bridge': self.p['bridge'],
            'bridge_type': view['bridge_type'],
            'bridge_created': view['bridge'] is None or bool(previous and previous.get('bridge_created')),
            'database_socket': self.vsctl.database_socket if self.vsctl else ovsdb.DEFAULT_DB_SOCKET,
            'netns_inode': netns.current_identity()[1],
            'original': original,
            'tools': {'ip': self.ip, 'ovs_vsctl': self.ovs_vsctl},
            'lock_path': self.lock_path,
            'timeout': timeout,
            'armed_at': now,
            'deadline': now + timeout if timeout else None,
            'pid': None,
            'reason': None,
            'history': list((record or {}).get('history') or []),
        }
        rollback.ensure_state_dir(self.state_dir)
        if timeout:
            # The new revert first, then the record, then the old revert goes: never a moment unprotected.
            new['pid'] = applier.spawn_revert(self.state_dir, self.record_file, token, timeout, self.python)
        rollback.add_event(new, new['status'], token=token, actions=len(actions))
        try:
            rollback.write_record(self.record_file, new)
        except OSError as exc:
            if new['pid']:
                rollback.cancel_revert(new['pid'], token)
            raise PipeworkError('cannot write the snapshot %s: %s' % (self.record_file, exc))
        if record is not None and record.get('status') == rollback.ARMED:
            rollback.cancel_revert(record.get('pid'), record.get('token'))
        else:
            if not timeout:
                self.warnings.append('rollback_timeout=0: no revert is armed; if this change cuts the host off, '
                                     'only console access brings it back')

        executor = self._executor(view)
        try:
            executor.apply(actions, self._describe)
            check = self._read()[0]
            leftover = planner.plan_present(check, self.p['datapath_type'])
            if leftover:
                raise PipeworkError('after the change the host still differs: %s'
                                    % '; '.join(self._describe(a) for a in leftover))
        except PipeworkError as exc:
            self._revert_now(new, 'the change failed after %d step(s) (%s)' % (len(executor.done), exc.msg),
                             exc.details)

        probe_result = self._probe(view, original)
        if probe_result['result'] == 'failed':
            self._revert_now(new, 'probe failed: %s' % probe_result['detail'], {'probe': probe_result})
        return self._result(view, actions, after, new, probe=probe_result)

    def _probe(self, view, original):
        address = self.p.get('probe')
        if address == '':
            return {'address': None, 'result': 'skipped', 'detail': 'probe disabled (probe: "")'}
        if address is None:
            address = planner.default_probe(view, original)
            if address is None:
                self.warnings.append('no probe: %s had no default gateway and no probe address was given, so '
                                     'nothing checks the host is reachable before the revert timer runs out'
                                     % self.p['uplink'])
                return {'address': None, 'result': 'skipped', 'detail': 'no default gateway and no probe given'}
        bridge_index = (self.ipr.link_lookup(ifname=self.p['bridge']) or [0])[0]
        window = self.p['probe_timeout']
        if view['bridge'] is not None and view['bridge'].get('stp_delay'):
            window = max(window, view['bridge']['stp_delay'] + 5)
        ok, detail = applier.probe(address, window, scope_id=bridge_index,
                                   neighbour_reachable=applier.neighbour_checker(self.ipr, address, bridge_index),
                                   interval=PROBE_INTERVAL)
        return {'address': address, 'result': 'ok' if ok else 'failed', 'detail': detail}

    def _revert_now(self, record, reason, details=None):
        """Put the uplink back at once (the change or the probe failed), then fail with the reason."""
        if record.get('pid'):
            rollback.cancel_revert(record['pid'], record['token'])
        ok, problems = rollback.restore(record, run=self.run_argv)
        record['status'] = rollback.REVERTED if ok else rollback.REVERT_FAILED
        record['reason'] = reason
        record['reverted_at'] = time.time()
        record['problems'] = problems
        record['pid'] = None
        rollback.add_event(record, record['status'], token=record['token'], reason=reason, problems=problems)
        try:
            rollback.write_record(self.record_file, record)
        except OSError as exc:
            problems.append('could not update %s: %s' % (self.record_file, exc))
        extra = dict(details or {})
        extra['rollback'] = self._rollback_info(record)
        extra['revert_problems'] = problems
        if ok:
            raise PipeworkError('%s; reverted: %s has its original addresses and routes again and is no longer a '
                                'port of %s' % (reason, self.p['uplink'], self.p['bridge']), **extra)
        raise PipeworkError('%s; the revert ran but did not restore everything: %s'
                            % (reason, '; '.join(problems)), **extra)

    def _confirm(self, view, record):
        status = record.get('status') if record else None
        if status == rollback.ARMED:
            pending = planner.plan_present(view, self.p['datapath_type'])
            if pending:
                raise PipeworkError('confirm: the migration is not complete (still to do: %s); run the task without '
                                    'confirm first. The revert stays armed' % '; '.join(self._describe(a) for a in pending))
            after = planner.simulate(self._before, [])
            if self.check_mode:
                return self._result(view, [], after, record, status='would_confirm', changed=True)
            alive = self._armed_alive(record)
            if alive and not rollback.cancel_revert(record.get('pid'), record.get('token')):
                raise PipeworkError('confirm: could not stop the revert process %s' % record.get('pid'))
            if not alive:
                self.warnings.append('the revert process %s armed with token %s was not running any more; the '
                                     'migration is recorded as confirmed' % (record.get('pid'), record.get('token')))
            record['status'] = rollback.CONFIRMED
            record['confirmed_at'] = time.time()
            record['pid'] = None
            rollback.add_event(record, rollback.CONFIRMED, token=record.get('token'))
            rollback.write_record(self.record_file, record)
            return self._result(view, [], after, record, changed=True)
        if status in (rollback.REVERTED, rollback.REVERT_FAILED):
            when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.get('reverted_at') or 0))
            raise PipeworkError(
                'confirm: too late, the migration of %s into %s was already reverted at %s (%s)%s. The host is on '
                'its original addressing; run the migration again'
                % (self.p['uplink'], self.p['bridge'], when, record.get('reason'),
                   ('; the revert reported: %s' % '; '.join(record.get('problems') or [])) if status == rollback.REVERT_FAILED else ''),
                rollback=self._rollback_info(record))
        if planner.is_migrated(view):
            return self._result(view, [], planner.simulate(self._before, []), record, changed=False)
        raise PipeworkError('confirm: nothing to confirm: %s is not migrated into %s and no revert is armed'
                            % (self.p['uplink'], self.p['bridge']), rollback=self._rollback_info(record))

    def _absent(self, view, record):
        original = record.get('original') if record else None
        actions = planner.plan_absent(view, original)
        armed = self._armed_alive(record)
        after = planner.simulate(self._before, actions)
        changed = bool(actions) or armed
        if not changed or self.check_mode:
            status = 'would_restore' if changed else (record.get('status') if record else None)
            return self._result(view, actions, after, record, status=status, changed=changed)
        if armed:
            rollback.cancel_revert(record.get('pid'), record.get('token'))
        executor = self._executor(view)
        try:
            executor.apply(actions, self._describe)
        except PipeworkError as exc:
            raise PipeworkError('state=absent failed after %d step(s): %s' % (len(executor.done), exc.msg),
                                done=executor.done, **exc.details)
        check = self._read()[0]
        leftover = planner.plan_absent(check, original)
        if leftover:
            raise PipeworkError('after state=absent the host still differs: %s'
                                % '; '.join(self._describe(a) for a in leftover), done=executor.done)
        if record is not None:
            record['status'] = rollback.RESTORED
            record['restored_at'] = time.time()
            record['pid'] = None
            rollback.add_event(record, rollback.RESTORED, token=record.get('token'))
            rollback.write_record(self.record_file, record)
        return self._result(view, actions, after, record, changed=True)

    def _warnings(self, view, skipped):
        """What the module cannot carry over safely (only said when it changes something)."""
        uplink, bridge = self.p['uplink'], self.p['bridge']
        out = ['route %s is not moved: %s' % (desc, why) for desc, why in skipped]
        out += snapshot.dynamic_warnings(view)
        out += snapshot.dhcp_client_warnings(uplink, bridge)
        out += snapshot.rule_warnings(self.ipr, uplink, bridge)
        for tool in ('iptables-save', 'ip6tables-save'):
            path = self.get_bin_path(tool)
            if path:
                rc, out_text, err = self.run_argv([path])
                if rc == 0:
                    out += snapshot.iptables_warnings(out_text, tool.replace('-save', ''), uplink, bridge)
        nft = self.get_bin_path('nft')
        if nft:
            rc, out_text, err = self.run_argv([nft, '-j', 'list', 'ruleset'])
            if rc == 0 and out_text.strip():
                try:
                    out += snapshot.nft_warnings(json.loads(out_text), uplink, bridge)
                except ValueError:
                    pass
        return out
