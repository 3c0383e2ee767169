# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ovs_vlan_port end to end: validate, read, plan, check the lockout rule, apply, read back, undo.

Cost per run, whatever the number of ports: one ``ovs-vsctl --format=json`` read, three netlink dumps
of the host namespace (its addresses, for the lockout rule), one ``ovs-vsctl`` transaction and, when
the run added ports or bridges, one read-back of their ``ofport``/``error``. When the read-back fails,
one more transaction undoes the run's transaction.
"""

from __future__ import annotations

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common.host_lock import host_lock
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import read_namespace
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.plan import (
    check_lockout, plan_all, transaction)
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.spec import build_ports

try:
    from pyroute2 import IPRoute
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the target host
    IPRoute = None
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc


def _columns(cols):
    if cols is None:
        return {'state': 'absent'}
    return {
        'state': 'present',
        'bridge': cols['bridge'],
        'tag': cols['tag'],
        'trunks': list(cols['trunks']),
        'vlan_mode': cols['vlan_mode'],
        'external_ids': dict(cols['external_ids']),
    }


class Runner:
    """Carries out one run. ``run_command(argv) -> (rc, out, err)`` is Ansible's run_command."""

    def __init__(self, params, check_mode, run_command, iproute_factory=None, lock=None):
        self.params = params
        self.check_mode = check_mode
        self.vsctl = ovsdb.Vsctl(run_command, params.get('database_socket'), params.get('timeout') or 30)
        self.iproute_factory = iproute_factory
        self.lock = lock or host_lock

    def _read_host(self):
        factory = self.iproute_factory
        if factory is None:
            if not HAS_PYROUTE2:
                raise PipeworkError('pyroute2 is missing on the target host (pip "pyroute2" or apt "python3-pyroute2"; '
                                    'the prerequisites role installs it); ovs_vlan_port reads the host\'s addresses '
                                    'with it to refuse lockouts: %s' % PYROUTE2_IMPORT_ERROR)
            factory = IPRoute
        ipr = factory()
        try:
            return read_namespace(ipr)
        finally:
            ipr.close()

    def run(self):
        wants = build_ports(self.params)  # bad input fails here, before anything is read or changed
        with self.lock():
            ovs = self.vsctl.read_state()
            host = self._read_host()
            plans, bridges = plan_all(wants, ovs, host)
            warnings = check_lockout(plans, ovs, host)
            commands, check, undo = transaction(plans, bridges)
            changed = bool(commands)
            if changed and not self.check_mode:
                self._apply(commands, check, undo)
        return {
            'changed': changed,
            'ports': [self._result(p) for p in plans],
            'bridges': dict((b.name, {'created': b.create, 'datapath_type': b.datapath_type, 'changes': b.changes()})
                            for b in bridges.values()),
            'commands': commands,
            'diff': {
                'before': {'ports': dict((p.want.port, _columns(p.before)) for p in plans)},
                'after': {'ports': dict((p.want.port, _columns(p.after)) for p in plans)},
            },
            'warnings': warnings,
        }

    def _apply(self, commands, check, undo):
        """ONE transaction (OVS applies all of it or none), then the read-back; on failure, undo it."""
        stderr = self.vsctl.transact(commands)
        try:
            self.vsctl.check_interfaces(check, stderr)
        except PipeworkError as exc:
            try:
                self.vsctl.transact(undo)
                exc.msg = '%s (rolled back this run\'s transaction)' % exc.msg
            except PipeworkError as undo_exc:
                exc.msg = '%s (rolling back this run\'s transaction failed too: %s)' % (exc.msg, undo_exc.msg)
            exc.args = (exc.msg,)
            raise exc

    @staticmethod
    def _result(p):
        cols = p.after or {}
        return {
            'name': p.want.port,
            'bridge': p.bridge,
            'state': p.want.state,
            'tag': cols.get('tag'),
            'trunks': list(cols.get('trunks') or []),
            'vlan_mode': cols.get('vlan_mode'),
            'external_ids': dict(cols.get('external_ids') or {}),
            'changed': p.changed,
            'action': p.action,
            'changes': list(p.changes),
        }


__all__ = ['Runner']
