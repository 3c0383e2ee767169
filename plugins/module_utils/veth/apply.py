# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""docker_veth end to end: resolve targets, read state, plan, apply in batches, roll back on failure.

Cost per run, whatever the number of attachments: one Docker API connection (one inspect per
container), two netlink sockets per namespace (opened with setns, no fork): pyroute2's for changes and a raw
one (netlink_dump.py) for the dumps, up to four dumps per namespace, one ovs-vsctl read, one ovs-vsctl
transaction and one ovs-vsctl read-back.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.veth import store as attachment_store
from ansible_collections.netplumb.pipework.plugins.module_utils.docker import containers as docker_target
from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netns
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common.fd_limit import ensure_open_files
from ansible_collections.netplumb.pipework.plugins.module_utils.common.host_lock import host_lock
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_dump import RawReader
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import (
    NamespaceState, read_links, read_namespace)
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.plan import (
    AttachmentPlan, handle_of, plan_absent, plan_bridges, plan_present, plan_purge, route_text)
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import build_attachments, check_batch

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the target host
    IPRoute = None
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc
    NetlinkError = OSError

EMPTY_OVS = ovsdb.OvsState([], [], [])


class Target:
    """A resolved target namespace, shared by the attachments that name it."""

    def __init__(self, namespace, container=None):
        self.namespace = namespace
        self.container = container
        self.ipr = None
        self.raw = None  # netlink_dump.RawReader in the same namespace: the dumps
        self.state = None


def _resolve(attachments, docker_host, timeout):
    """Find each target's namespace; identity is the container ID or the namespace's path or inode."""
    client = docker_target.DockerClient(docker_host, timeout=timeout)
    targets = {}
    seen_containers = {}
    try:
        for a in attachments:
            if a.target_kind == 'container':
                info = seen_containers.get(a.target)
                if a.target not in seen_containers:
                    info = client.inspect(a.target)
                    seen_containers[a.target] = info
                if a.state == 'present':
                    docker_target.require_running(a.opt('container'), a.target, info)
                a.container = info
                if info is not None and info.running and info.pid:
                    key = 'container:%s' % info.id
                    if key not in targets:
                        targets[key] = Target(netns.Namespace(info.netns_path, a.opt('container')), info)
                    a.namespace = targets[key]
                if info is not None:
                    a.set_identity(info.id)
                elif a.params.get('host_ifname'):
                    a.identity = None
            elif a.target_kind == 'netns':
                path = netns.netns_path(a.target)
                if not os.path.exists(path):
                    if a.state == 'present':
                        raise PipeworkError('%s: network namespace %r does not exist (%s)' % (a.opt('netns'), a.target, path))
                else:
                    key = 'netns:%s' % path
                    if key not in targets:
                        targets[key] = Target(netns.Namespace(path, a.opt('netns')))
                    a.namespace = targets[key]
                a.set_identity('netns:%s' % path)
            else:
                path = '/proc/%d/ns/net' % a.target
                if not os.path.exists(path):
                    if a.state == 'present':
                        raise PipeworkError('%s: no process with pid %d' % (a.opt('pid'), a.target))
                    continue
                ns = netns.Namespace(path, a.opt('pid'))
                key = 'netns-inode:%d:%d' % ns.identity
                if key in targets:
                    ns.close()
                else:
                    targets[key] = Target(ns)
                a.namespace = targets[key]
                a.set_identity(key)
    finally:
        client.close()
    return targets


class Runner:
    """Carries out one run; holds the sockets and the undo journal."""

    def __init__(self, params, check_mode, run_command, ovs_available=True, iproute_factory=None, record=True,
                 raw_factory=None):
        self.params = params
        # Record present attachments / forget absent ones for the persistence agent (attachment_store.py).
        self.record = record
        self.check_mode = check_mode
        self.vsctl = ovsdb.Vsctl(run_command, params.get('database_socket'), params.get('timeout') or 30)
        self.ovs_available = ovs_available
        self.iproute_factory = iproute_factory or IPRoute
        # Reads (dumps) go through a raw rtnetlink socket: pyroute2's decoding of every attribute of every
        # message was most of a run's time. Changes, and the one-name lookups of _link_index, use pyroute2.
        self.raw_factory = raw_factory or RawReader
        self.undo = []
        self.warnings = []
        self._link_cache = {}
        self._raw = {}  # id(ipr) -> the RawReader of the same namespace

    def run(self):
        started = time.monotonic()
        if not HAS_PYROUTE2:
            raise PipeworkError('pyroute2 is missing on the target host (pip "pyroute2" or apt "python3-pyroute2"; '
                                'the prerequisites role installs it): %s' % PYROUTE2_IMPORT_ERROR)
        attachments = build_attachments(self.params)
        ensure_open_files(len(attachments))  # upper bound of the target namespaces held open at once
        with host_lock():
            targets = _resolve(attachments, self.params.get('docker_host'), self.params.get('timeout') or 60)
            try:
                return self._run_locked(attachments, targets, started)
            finally:
                for t in targets.values():
                    if t.raw is not None:
                        t.raw.close()
                    if t.ipr is not None:
                        t.ipr.close()
                    t.namespace.close()

    def _read_target(self, target, attachments):
        """A target namespace's state; addresses and routes only when planning needs them (dumps cost)."""
        mine = [a for a in attachments if a.namespace is target]
        links = read_links(target.ipr, raw=target.raw)
        names = set(ln['name'] for ln in links)
        need_addrs = any(a.ifname in names for a in mine)
        need_routes = need_addrs or any(a.gateway is not None or a.clear_gateway or a.routes for a in mine)
        return read_namespace(target.ipr, links=links, addrs=need_addrs, routes=need_routes, raw=target.raw)

    def _read_ovs(self, attachments, host):
        needs_ovs = any(a.state == 'present' and (a.bridge_type == 'ovs' or (
            a.bridge_type == 'auto' and a.bridge not in host.links)) for a in attachments)
        if not self.ovs_available:
            if any(a.bridge_type == 'ovs' for a in attachments):
                raise PipeworkError('bridge_type: ovs needs Open vSwitch, and ovs-vsctl is not installed '
                                    '(the prerequisites role installs it)')
            return EMPTY_OVS
        try:
            return self.vsctl.read_state()
        except PipeworkError:
            if needs_ovs or any(a.state == 'absent' for a in attachments):
                if needs_ovs:
                    raise
            return EMPTY_OVS

    def _run_locked(self, attachments, targets, started):
        check_batch([a for a in attachments if a.host_ifname])
        self.host_ipr = self.iproute_factory()
        self.host_raw = None
        try:
            self.host_raw = self.raw_factory()
            self._raw[id(self.host_ipr)] = self.host_raw
            host = read_namespace(self.host_ipr, raw=self.host_raw)
            # The host's links as read for planning: links this run adds are looked up by name, never by
            # dumping the host again (see _link_index); step 2 of _apply_steps drops the ones it deletes.
            self._link_cache[id(self.host_ipr)] = dict(host.links)
            ovs = self._read_ovs(attachments, host)
            for t in targets.values():
                t.ipr = netns.iproute_in(t.namespace, self.iproute_factory)
                t.raw = netns.iproute_in(t.namespace, self.raw_factory)
                self._raw[id(t.ipr)] = t.raw
                t.state = self._read_target(t, attachments)
            bridges = plan_bridges(attachments, host, ovs)
            plans, purge_cmds, purge_links = [], [], []
            for a in attachments:
                ns_state = a.namespace.state if a.namespace else NamespaceState([], [], [])
                if a.state == 'present':
                    plan = plan_present(a, bridges[a.bridge], host, ovs, ns_state)
                else:
                    plan = plan_absent(a, host, ovs, a.namespace.state if a.namespace else None)
                keep = a.container.id if (a.container and a.state == 'present') else None
                cmds, links, notes = plan_purge(a, host, ovs, keep_container_id=keep)
                if notes:
                    purge_cmds += cmds
                    purge_links += [name for name in links if name not in purge_links]
                    plan.changes += notes
                    if plan.action == 'none':
                        plan.action = 'updated' if a.state == 'present' else 'removed'
                plans.append(plan)
            bridge_changes = [c for b in bridges.values() for c in b.changes()]
            changed = bool(bridge_changes) or any(p.changed for p in plans)
            if changed and not self.check_mode:
                self._apply(bridges, plans, purge_cmds, purge_links, host)
            results = self._results(plans, bridges)
            if self.record and not self.check_mode:
                added = set(name for p in plans for name in p.ovs_check)
                self.warnings += attachment_store.record_run(self.params, attachments, results, ovs, self.vsctl,
                                                             added_ports=added)
        finally:
            if self.host_raw is not None:
                self.host_raw.close()
            self.host_ipr.close()
        return {
            'changed': changed,
            'attachments': results,
            'bridges': dict((b.name, {'type': b.kind, 'created': b.create, 'changes': b.changes()})
                            for b in bridges.values()),
            'diff': {
                'before': {'attachments': [p.before for p in plans]},
                'after': {'attachments': [p.after for p in plans]},
            },
            'warnings': self.warnings,
            'elapsed': round(time.monotonic() - started, 4),
        }

    # ---- apply -------------------------------------------------------------------------------

    def _apply(self, bridges, plans, purge_cmds, purge_links, host):
        try:
            self._apply_steps(bridges, plans, purge_cmds, purge_links, host)
        except Exception as exc:
            undone = self._rollback()
            if isinstance(exc, PipeworkError):
                exc.msg = '%s (rolled back %d change(s) made by this run)' % (exc.msg, undone)
                exc.args = (exc.msg,)
                raise exc
            if isinstance(exc, (NetlinkError, OSError)):
                raise PipeworkError('%s (rolled back %d change(s) made by this run)' % (exc, undone))
            raise

    def _rollback(self):
        undone = 0
        while self.undo:
            step = self.undo.pop()
            try:
                step()
                undone += 1
            except Exception:  # pylint: disable=broad-except
                pass  # best effort: keep undoing the rest
        return undone

    def _links_of(self, ipr):
        """name -> link of a namespace (at least name, index, mac, mtu), from ONE raw dump that is reused;
        links made later are looked up by name (``_link_index``).

        link_lookup() would dump every link of the namespace per call (pyroute2 0.7 does), which costs
        O(N^2) on a host with N attachments.
        """
        key = id(ipr)
        if key not in self._link_cache:
            raw = self._raw.get(key)
            self._link_cache[key] = dict((ln['name'], ln) for ln in read_links(ipr, raw=raw))
        return self._link_cache[key]

    def _link_index(self, ipr, name):
        """A link's index: from the cached dump, else by one RTM_GETLINK for that name.

        Not a second dump: with hundreds of veths on the host a dump spans many messages, and a busy host
        that adds or deletes any link meanwhile interrupts it (NLM_F_DUMP_INTR) again and again; a request
        for one name is answered in one message.
        """
        links = self._links_of(ipr)
        link = links.get(name)
        if link is None:
            try:
                link = _link_brief(ipr.link('get', ifname=name)[0])
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
                return None
            links[name] = link
        return link['index'] if link else None

    def _apply_steps(self, bridges, plans, purge_cmds, purge_links, host):
        ipr = self.host_ipr
        # 1. Linux bridges that do not exist yet.
        for b in bridges.values():
            if b.create and b.kind == 'linux':
                ipr.link('add', ifname=b.name, kind='bridge')
                self.undo.append(lambda name=b.name: self.host_ipr.link('del', index=self._link_index(self.host_ipr, name)))
                ipr.link('set', index=self._link_index(ipr, b.name), state='up')
        # 2. Host links that go away (recreated, removed, stale).
        for name in [p.delete_host_link for p in plans if p.delete_host_link] + purge_links:
            index = self._link_index(ipr, name)
            if index is not None:
                ipr.link('del', index=index)
                self._links_of(ipr).pop(name, None)
        # 3. New veth pairs, the container end created directly in its namespace.
        for p in plans:
            if p.create_veth:
                self._create_veth(p)
        # 4. Linux-bridge membership, MTU and link state of host ends.
        for p in plans:
            a = p.want
            if p.set_master or p.host_mtu or p.host_up or p.release_master:
                index = self._link_index(ipr, a.host_ifname)
                kwargs = {}
                if p.set_master:
                    kwargs['master'] = self._link_index(ipr, p.set_master)
                elif p.release_master:
                    kwargs['master'] = 0
                if p.host_mtu:
                    kwargs['mtu'] = p.host_mtu
                if p.host_up:
                    kwargs['state'] = 'up'
                ipr.link('set', index=index, **kwargs)
        # 5. Every OVS change in ONE transaction, then read back what it added.
        self._apply_ovs(bridges, plans, purge_cmds)
        # 6. Container-side configuration, one socket per namespace.
        for p in plans:
            if p.ns_ops:
                self._apply_ns(p)
        # 7. The host's own address on each bridge (the OVS internal port exists only now).
        for b in bridges.values():
            if b.addresses or (b.create and b.kind == 'ovs'):
                index = self._link_index(ipr, b.name)
                if index is None:
                    raise PipeworkError('bridge: %s has no network device on this host' % b.name)
                for addr in b.addresses:
                    ipr.addr('add', index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
                    self.undo.append(lambda i=index, ad=addr: self.host_ipr.addr(
                        'del', index=i, address=str(ad.ip), prefixlen=ad.network.prefixlen))
                ipr.link('set', index=index, state='up')

    def _create_veth(self, p):
        a = p.want
        peer = {'ifname': a.ifname, 'net_ns_fd': a.namespace.namespace.fd}
        kwargs = {}
        if a.mtu:
            peer['mtu'] = a.mtu
            kwargs['mtu'] = a.mtu
        if a.mac:
            peer['address'] = a.mac
        try:
            self.host_ipr.link('add', ifname=a.host_ifname, kind='veth', peer=peer, **kwargs)
        except NetlinkError as exc:
            raise PipeworkError('%s: cannot create veth %s <-> %s: %s' % (a.label, a.host_ifname, a.ifname, exc))
        # Deleting the host end deletes its peer inside the namespace too.
        self.undo.append(lambda name=a.host_ifname: self.host_ipr.link('del', index=self._link_index(self.host_ipr, name)))

    def _apply_ovs(self, bridges, plans, purge_cmds):
        commands, check, undo = [], [], []
        for b in bridges.values():
            if b.create and b.kind == 'ovs':
                commands += ovsdb.cmd_add_bridge(b.name, b.datapath_type)
                commands.append(['set', 'Bridge', b.name, 'external_ids:%s=%s' % (ovsdb.EXT_OWNER, ovsdb.quote(ovsdb.OWNER))])
                check.append(b.name)
                undo.append(['--if-exists', 'del-br', b.name])
        pre = []
        for p in plans:
            pre += p.ovs_pre_commands
            commands += p.ovs_commands
            check += p.ovs_check
            undo = p.ovs_undo + undo
        commands += purge_cmds
        if pre:
            self.vsctl.transact(pre)
        if not commands:
            return
        stderr = self.vsctl.transact(commands)
        if undo:
            self.undo.append(lambda: self.vsctl.transact(undo))
        self.vsctl.check_interfaces(check, stderr)

    def _apply_ns(self, p):
        a = p.want
        ipr = a.namespace.ipr
        try:
            index = self._link_index(ipr, a.ifname)
            if index is None:
                raise PipeworkError('%s: %s vanished from %s %r' % (a.label, a.ifname, a.target_kind, a.target))
            op = None
            for op in p.ns_ops:
                kind = op[0]
                if kind == 'mtu':
                    ipr.link('set', index=index, mtu=op[1])
                elif kind == 'mac':
                    ipr.link('set', index=index, address=op[1])
                elif kind == 'up':
                    ipr.link('set', index=index, state='up')
                elif kind == 'add_addr':
                    addr = op[1]
                    kwargs = {}
                    if addr.version == 6:
                        # Docker turns IPv6 off in containers without an IPv6 network; this interface is
                        # ours, so turn it on for this interface only when an IPv6 address is asked for.
                        self._enable_ipv6(a, a.ifname)
                        kwargs['flags'] = 0x02  # IFA_F_NODAD: usable at once, as Docker does
                    ipr.addr('add', index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen, **kwargs)
                elif kind == 'del_addr':
                    addr = op[1]
                    ipr.addr('del', index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
                elif kind == 'add_route':
                    dest, via = op[1], op[2]
                    kwargs = {'dst': str(dest), 'oif': index}
                    if via is not None:
                        kwargs['gateway'] = str(via)
                    ipr.route('add', **kwargs)
                elif kind == 'del_route':
                    self._del_route(ipr, op[1])
                elif kind == 'add_default':
                    gw = op[1]
                    family = socket.AF_INET if gw.version == 4 else socket.AF_INET6
                    ipr.route('add', dst='default' if gw.version == 4 else '::/0', family=family,
                              gateway=str(gw), oif=index)
        except NetlinkError as exc:
            raise PipeworkError('%s (%s %r, %s): %s failed: %s'
                                % (a.label, a.target_kind, a.target, a.ifname, _op_text(op), exc))

    def _enable_ipv6(self, a, ifname):
        path = '/proc/sys/net/ipv6/conf/%s/disable_ipv6' % ifname
        # /proc/sys/net shows the namespace of the thread that opens it.
        with netns.entered(a.namespace.namespace):
            try:
                with open(path) as f:
                    disabled = f.read().strip() == '1'
                if disabled:
                    with open(path, 'w') as f:
                        f.write('0')
            except (IOError, OSError) as exc:
                raise PipeworkError('%s: cannot enable IPv6 on %s in %s %r: %s'
                                    % (a.opt('address'), ifname, a.target_kind, a.target, exc))

    def _del_route(self, ipr, r):
        kwargs = {'family': r['family'], 'table': r['table'], 'oif': r['oif']}
        if r['dst'] is not None:
            kwargs['dst'] = str(r['dst'])
        else:
            kwargs['dst'] = 'default' if r['family'] == socket.AF_INET else '::/0'
        if r['gateway'] is not None:
            kwargs['gateway'] = str(r['gateway'])
        if r['priority'] is not None:
            kwargs['priority'] = r['priority']
        ipr.route('del', **kwargs)

    # ---- results -------------------------------------------------------------------------------

    def _results(self, plans, bridges):
        results = []
        for p in plans:
            a = p.want
            item = {
                'container': a.container.name if a.container else (a.target if a.target_kind == 'container' else None),
                'container_id': a.container.id if a.container else None,
                'pid': a.container.pid if a.container else (a.target if a.target_kind == 'pid' else None),
                'netns': a.target if a.target_kind == 'netns' else None,
                'target': handle_of(a),
                'ifname': a.ifname,
                'host_ifname': a.host_ifname,
                'state': a.state,
                'changed': p.changed,
                'action': p.action,
                'changes': p.changes,
            }
            if a.state == 'present':
                item.update(p.after)
                item['bridge_type'] = bridges[a.bridge].kind
                if not self.check_mode and a.namespace is not None:
                    # The dump taken after the veth was created (or a fresh one): the kernel's MAC.
                    link = self._links_of(a.namespace.ipr).get(a.ifname)
                    if link:
                        item['mac'] = a.mac or link['mac']
                        item['mtu'] = a.mtu or link['mtu']
                if p.replaced_default_routes:
                    ns = a.namespace.state
                    item['replaced_default_routes'] = [route_text(r, ns) for r in p.replaced_default_routes]
            results.append(item)
        return results


def _op_text(op):
    return ' '.join(str(x) for x in op if not isinstance(x, dict)) if op else 'configuration'


def _link_brief(msg):
    return {'name': msg.get_attr('IFLA_IFNAME'), 'index': msg['index'],
            'mac': (msg.get_attr('IFLA_ADDRESS') or '').lower(), 'mtu': msg.get_attr('IFLA_MTU')}


__all__ = ['Runner', 'AttachmentPlan']
