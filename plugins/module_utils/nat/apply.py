# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nat_portmap end to end: validate, resolve targets, read the rules, plan, apply, roll back on failure.

Cost per run, whatever the number of ports: one ``iptables-save`` and at most one
``iptables-restore --noflush`` per family, one Docker inspect and one netlink socket per container,
one conntrack call per changed UDP host port.
"""

from __future__ import annotations

import time

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.common.host_lock import host_lock
from ansible_collections.netplumb.pipework.plugins.module_utils.nat import spec as nat_args
from ansible_collections.netplumb.pipework.plugins.module_utils.nat import conntrack as nat_conntrack
from ansible_collections.netplumb.pipework.plugins.module_utils.nat import host as nat_host
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.model import OwnedState
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.plan import (
    Planner, forward_policy, mapping_changes, plan_restore)
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.ports import BoundPorts, read_port_range
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.render import desired_chains, jumps
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.save import SavedTables, owned_state
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.target import ContainerResolver

TOOLS = {4: ('iptables-save', 'iptables-restore'), 6: ('ip6tables-save', 'ip6tables-restore')}


class Runner:
    """``run_command(argv, data=None) -> (rc, out, err)``; ``which(name) -> path or None``."""

    def __init__(self, params, check_mode, run_command, which, iproute_factory=None, sysctl=None,
                 proc_net='/proc/net', port_range_path=None):
        self.params = params
        self.check_mode = check_mode
        self._run = run_command
        self.which = which
        self.iproute_factory = iproute_factory
        self.sysctl = sysctl or nat_host.Sysctl()
        self.proc_net = proc_net
        self.port_range_path = port_range_path
        self.warnings = []
        self._undo = []

    # -- reading -----------------------------------------------------------------------------------
    def _save(self, family, needed):
        save = self.which(TOOLS[family][0])
        if not save:
            if needed:
                raise PipeworkError('%s is not installed on the target host (package iptables)' % TOOLS[family][0])
            return SavedTables('', family)
        rc, out, err = self._run([save])
        if rc != 0:
            if needed:
                raise PipeworkError('%s failed: %s' % (TOOLS[family][0], (err or out).strip()), stderr=err)
            return SavedTables('', family)
        return SavedTables(out, family)

    def _resolve(self, items, resolver):
        for item in items:
            if item.kind == 'container' and item.state == 'present':
                item.resolved = resolver.resolve(item.label, item.name, item.ifname, item.families,
                                                 tolerate_missing=self.check_mode)

    # -- the run -----------------------------------------------------------------------------------
    def run(self):
        started = time.monotonic()
        items, masquerade, state, isolate, bridge = nat_args.build(self.params)
        wants_v6 = any(6 in i.families for i in items if i.state == 'present') or \
            any(e.family == 6 for e in masquerade)
        with host_lock(timeout=max(self.params.get('timeout') or 30, 30) * 10):
            resolver = ContainerResolver(self.params.get('docker_host'), self.params.get('timeout') or 30,
                                         iproute_factory=self.iproute_factory)
            try:
                self._resolve(items, resolver)
                result = self._run_locked(items, masquerade, state, isolate, bridge, wants_v6, resolver)
            finally:
                resolver.close()
        result['elapsed'] = round(time.monotonic() - started, 4)
        result['warnings'] = self.warnings
        return result

    def _run_locked(self, items, masquerade, state, isolate, bridge, wants_v6, resolver):
        saved = {4: self._save(4, True), 6: self._save(6, wants_v6)}
        have = OwnedState()
        unknown = {}
        for family in (4, 6):
            mappings, masq, iso, unknown[family] = owned_state(saved[family])
            have.mappings.extend(mappings)
            have.masquerade.extend(masq)
            if iso is not None:
                have.isolate[family] = iso
        if any(m.family == 6 for m in have.mappings) or any(e.family == 6 for e in have.masquerade):
            wants_v6 = True
        for text in unknown.values():
            for line in text:
                self.warnings.append('removing a rule the collection did not write from its own chain: %s' % line)

        planner = Planner(have, BoundPorts.read(self.proc_net),
                          read_port_range(self.port_range_path) if self.port_range_path else read_port_range(),
                          dict((f, saved[f].foreign_dnat()) for f in (4, 6)))
        run_bridges = [bridge] + [i.resolved.port.bridge for i in items
                                  if i.resolved is not None and i.resolved.port is not None]
        new = planner.plan(items, masquerade, state, isolate, run_bridges)
        if not wants_v6 and new.active(6):
            raise PipeworkError('IPv6 mappings need ip6tables-save and ip6tables-restore on the target host')

        changes, udp_ports = mapping_changes(have, new)
        restores = {}
        for family in (4, 6):
            if family == 6 and not wants_v6 and not saved[6].jumps():
                continue
            restores[family] = plan_restore(saved[family], desired_chains(new, family), unknown[family])
            changes.extend(restores[family].changes)
        host_steps = self._plan_host(items, new, saved, resolver)
        changes.extend(step[0] for step in host_steps)
        changes.extend(planner.notes)
        changed = bool(changes)

        flushed = []
        if changed and not self.check_mode:
            self._apply(restores, host_steps)
            flushed, warns = nat_conntrack.flush(self._run, self.which('conntrack'), udp_ports)
            self.warnings.extend(warns)

        names = set(i.name for i in items)
        return {
            'changed': changed,
            'mappings': [m.to_result() for m in sorted(new.mappings, key=lambda m: m.sort_key()) if m.target in names],
            'masquerade': [e.to_result() for e in new.masquerade],
            'isolate': dict(('ipv%d' % f, b) for f, b in new.isolate.items()),
            'changes': changes,
            'conntrack_flushed': flushed,
            'diff': self._diff(saved, new, restores),
        }

    # -- host settings -----------------------------------------------------------------------------
    def _plan_host(self, items, new, saved, resolver):
        """[(description, apply function, undo function)] for sysctls and hairpin."""
        steps = []
        for family in (4, 6):
            if not any(m.family == family for m in new.mappings) and not any(e.family == family for e in new.masquerade):
                continue
            key = nat_host.forwarding_key(family)
            value = self.sysctl.get(key)
            if value is not None and value != '1':
                steps.append(self._sysctl_step(key, value, '1'))
                self.warnings.append('%s was %s: turned on so that published ports and masquerade work, '
                                     'as Docker does' % (nat_host.dotted(key), value))
                if forward_policy(saved[family]) == 'ACCEPT' and family not in new.isolate:
                    self.warnings.append(
                        'the IPv%d FORWARD policy is ACCEPT: with forwarding on, this host now routes between all '
                        'its interfaces; isolate: true drops forwarded traffic that neither enters nor leaves '
                        'the collection\'s bridges' % family)
        names = set(i.name for i in items if i.state == 'present')
        localnet_done = set()
        for m in new.mappings:
            if m.target not in names or not m.uses_localnet:
                continue
            oif = nat_host.route_oif(resolver.host_ipr(), m.container_ip)
            if oif is None or oif in localnet_done:
                continue
            localnet_done.add(oif)
            key = nat_host.localnet_key(oif)
            value = self.sysctl.get(key)
            if value is not None and value != '1':
                steps.append(self._sysctl_step(key, value, '1'))
                self.warnings.append(
                    '%s turned on for localhost mappings; it would expose the host\'s loopback-only services to '
                    'neighbours on %s (CVE-2020-8558), so the collection drops 127.0.0.0/8 arriving from outside '
                    '(chain NETPLUMB-INPUT)' % (nat_host.dotted(key), oif))
        for item in items:
            port = item.resolved.port if item.resolved is not None else None
            if item.state != 'present' or port is None or port.bridge_kind != 'bridge' or port.hairpin:
                continue
            if not any(m.target == item.name for m in new.mappings):
                continue
            steps.append(self._hairpin_step(resolver, port, item.name))
        return steps

    def _sysctl_step(self, key, old, new):
        def do():
            self.sysctl.set(key, new)

        def undo():
            self.sysctl.set(key, old)
        return ('set %s = %s (was %s)' % (nat_host.dotted(key), new, old), do, undo)

    def _hairpin_step(self, resolver, port, name):
        def do():
            nat_host.set_hairpin(resolver.host_ipr(), port.index, True)

        def undo():
            nat_host.set_hairpin(resolver.host_ipr(), port.index, False)
        return ('turn on hairpin mode on %s (bridge %s), so %s reaches its own published ports through host '
                'addresses' % (port.name, port.bridge, name), do, undo)

    # -- apply / rollback --------------------------------------------------------------------------
    def _apply(self, restores, host_steps):
        done = []
        try:
            for description, do, undo in host_steps:
                do()
                done.append(undo)
            for family in (4, 6):
                restore = restores.get(family)
                if restore is None or not restore.text:
                    continue
                self._restore(family, restore.text)
                if restore.rollback:
                    done.append(lambda f=family, text=restore.rollback: self._restore(f, text))
        except PipeworkError:
            for undo in reversed(done):
                try:
                    undo()
                except Exception as exc:  # pylint: disable=broad-except  # keep rolling back the rest
                    self.warnings.append('rollback step failed: %s' % exc)
            raise

    def _restore(self, family, text):
        tool = self.which(TOOLS[family][1])
        if not tool:
            raise PipeworkError('%s is not installed on the target host' % TOOLS[family][1])
        rc, out, err = self._run([tool, '--noflush'], data=text)
        if rc != 0:
            raise PipeworkError('%s --noflush refused the change: %s' % (TOOLS[family][1], (err or out).strip()),
                                stderr=err, restore_input=text)

    def _diff(self, saved, new, restores):
        before = []
        after = []
        for family in (4, 6):
            if family not in restores:
                continue
            label = '# IPv%d' % family
            own = saved[family].dump_own()
            if own:
                before.append(label)
                before.extend(own)
            desired = desired_chains(new, family)
            if desired is not None:
                after.append(label)
                for table in desired:
                    for chain in desired[table]:
                        after.extend(desired[table][chain])
                parent = 'DOCKER-USER' if saved[family].has_chain('filter', 'DOCKER-USER') else 'FORWARD'
                existing = dict((j[2], j[3].line) for j in saved[family].jumps())
                for table, parent_chain, own_chain, args, insert in jumps(family, parent):
                    after.append(existing.get(own_chain, '-A %s %s' % (parent_chain, args)))
        return {'before': '\n'.join(before) + ('\n' if before else ''),
                'after': '\n'.join(after) + ('\n' if after else '')}
