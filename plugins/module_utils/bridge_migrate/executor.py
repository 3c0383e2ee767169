# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_bridge_migrate's writes: the planned actions, the detached revert, and the probe.

Actions run as ``ip`` argument lists (rollback.py builds them, so the change and its revert share one
description of every address and route) and, for Open vSwitch, as ovsdb.Vsctl transactions whose
interfaces are read back (ofport/error). The revert process is a copy of rollback.py started with the
target's interpreter, detached from this process, its files and its SSH session.
"""

from __future__ import annotations

import errno
import inspect
import ipaddress
import os
import pkgutil
import select
import socket
import struct
import subprocess
import sys
import time

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import revert as rollback

EXT_ROLE = 'netplumb_role'
NUD_REACHABLE = 0x02


class Executor:
    """Applies planned actions in order; the first failure raises (the caller reverts)."""

    def __init__(self, run, ip, vsctl, uplink, bridge, bridge_type, link_exists):
        self.run = run
        self.ip = ip
        self.vsctl = vsctl
        self.uplink = uplink
        self.bridge = bridge
        self.bridge_type = bridge_type
        self.link_exists = link_exists
        self.done = []

    def apply(self, actions, describe):
        for action in actions:
            getattr(self, '_' + action['op'])(action)
            self.done.append(describe(action))

    def _ip(self, argv, ignore_failure=False):
        rc, out, err = self.run(argv)
        if rc != 0 and not ignore_failure:
            raise PipeworkError('%s failed: %s' % (' '.join(argv), (err or out).strip()), command=argv, stderr=err)
        return rc

    # bridge
    def _create_bridge(self, a):
        if a['type'] == 'linux':
            self._ip([self.ip, 'link', 'add', 'name', self.bridge, 'address', a['mac'], 'mtu', str(a['mtu']),
                      'type', 'bridge'])
            return
        cmds = ovsdb.cmd_add_bridge(self.bridge, a['datapath_type'])
        cmds += [['set', 'Bridge', self.bridge, 'other_config:hwaddr=%s' % ovsdb.quote(a['mac']),
                  'external_ids:%s=%s' % (ovsdb.EXT_OWNER, ovsdb.quote(ovsdb.OWNER))],
                 ['set', 'Interface', self.bridge, 'mtu_request=%d' % a['mtu']]]
        said = self.vsctl.transact(cmds)
        self.vsctl.check_interfaces([self.bridge], said)
        deadline = time.monotonic() + 10
        while not self.link_exists(self.bridge):
            if time.monotonic() > deadline:
                raise PipeworkError('Open vSwitch bridge %s has no network device after 10 s' % self.bridge)
            time.sleep(0.05)

    def _set_bridge(self, a):
        if self.bridge_type == 'linux':
            argv = [self.ip, 'link', 'set', 'dev', self.bridge]
            if a.get('mac'):
                argv += ['address', a['mac']]
            if a.get('mtu'):
                argv += ['mtu', str(a['mtu'])]
            self._ip(argv)
            return
        cmds = []
        if a.get('mac'):
            cmds.append(['set', 'Bridge', self.bridge, 'other_config:hwaddr=%s' % ovsdb.quote(a['mac'])])
        if a.get('mtu'):
            cmds.append(['set', 'Interface', self.bridge, 'mtu_request=%d' % a['mtu']])
        self.vsctl.transact(cmds)

    def _bridge_up(self, a):
        self._ip([self.ip, 'link', 'set', 'dev', self.bridge, 'up'])

    def _uplink_up(self, a):
        self._ip([self.ip, 'link', 'set', 'dev', self.uplink, 'up'])

    # addresses
    def _add_address(self, a):
        self._ip(rollback.addr_argv(self.ip, 'add', a['addr'], a['dev'], label=a.get('label'), nodad=True))

    def _del_address(self, a):
        self._ip(rollback.addr_argv(self.ip, 'del', a['addr'], a['dev']))

    # the uplink as a port
    def _enslave(self, a):
        if self.bridge_type == 'linux':
            self._ip([self.ip, 'link', 'set', 'dev', self.uplink, 'master', self.bridge])
            return
        said = self.vsctl.transact([
            ['add-port', self.bridge, self.uplink],
            ['set', 'Port', self.uplink, 'external_ids:%s=%s' % (ovsdb.EXT_OWNER, ovsdb.quote(ovsdb.OWNER)),
             'external_ids:%s=uplink' % EXT_ROLE],
        ])
        self.vsctl.check_interfaces([self.uplink], said)

    def _release(self, a):
        if self.bridge_type == 'linux':
            self._ip([self.ip, 'link', 'set', 'dev', self.uplink, 'nomaster'])
        else:
            self.vsctl.transact([['--if-exists', 'del-port', self.bridge, self.uplink]])

    # routes
    def _move_route(self, a):
        to_bridge = {self.uplink: self.bridge}
        if a['direction'] == 'to_bridge':
            self._ip(rollback.route_argv(self.ip, 'replace', a['route'], to_bridge))
            # `replace` swapped a same-key route already; a left-over twin (appended routes) goes too
            self._ip(rollback.route_argv(self.ip, 'del', a['route']), ignore_failure=True)
        else:
            self._ip(rollback.route_argv(self.ip, 'replace', a['route']))
            self._ip(rollback.route_argv(self.ip, 'del', a['route'], to_bridge), ignore_failure=True)

    def _del_route(self, a):
        self._ip(rollback.route_argv(self.ip, 'del', a['route'], {self.uplink: self.bridge}), ignore_failure=True)

    def _set_uplink(self, a):
        argv = [self.ip, 'link', 'set', 'dev', self.uplink]
        if a.get('mtu'):
            argv += ['mtu', str(a['mtu'])]
        if a.get('mac'):
            argv += ['address', a['mac']]
        if a.get('up') is not None:
            argv.append('up' if a['up'] else 'down')
        self._ip(argv)


# ---- the detached revert -------------------------------------------------------------------------------

def revert_source():
    """revert.py's own source, also when it is imported from Ansible's module zip."""
    package = rollback.__name__.rpartition('.')[0]
    data = None
    try:
        data = pkgutil.get_data(package, 'revert.py')
    except (IOError, OSError, ImportError, ValueError, AttributeError):
        data = None
    if not data:
        data = inspect.getsource(rollback).encode('utf-8')
    if b'def arm(' not in data:
        raise PipeworkError('cannot find the source of the revert program (revert.py)')
    return data


def install_revert(state_dir):
    """Write the revert program next to the snapshots (root-only), atomically; return its path."""
    rollback.ensure_state_dir(state_dir)
    path = os.path.join(state_dir, rollback.SCRIPT_NAME)
    data = revert_source()
    try:
        with open(path, 'rb') as handle:
            if handle.read() == data:
                return path
    except (IOError, OSError):
        pass
    tmp = '%s.tmp.%d' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return path


def spawn_revert(state_dir, record_file, token, delay, python=None):
    """Start the revert detached; return its PID once /proc/PID/cmdline shows it carries ``token``."""
    script = install_revert(state_dir)
    argv = [python or sys.executable, '-I', script, 'arm', record_file, token, '%g' % delay]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                close_fds=True, start_new_session=True, cwd='/',
                                env={'PATH': rollback.SAFE_PATH, 'LC_ALL': 'C'})
        out, err = proc.communicate(timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PipeworkError('cannot start the revert process (%s): %s' % (' '.join(argv), exc))
    try:
        pid = int(out.decode('ascii').strip())
    except ValueError:
        raise PipeworkError('the revert process did not start (exit %s): %s'
                            % (proc.returncode, err.decode('utf-8', 'replace').strip() or out.decode('utf-8', 'replace')))
    if not rollback.is_revert_process(pid, token):
        raise PipeworkError('the revert process %d vanished right after it started; see %s'
                            % (pid, record_file[:-len('.json')] + '.log'))
    return pid


# ---- the probe -----------------------------------------------------------------------------------------

def _checksum(data):
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xffff)
    total += total >> 16
    return ~total & 0xffff


def _echo_socket(version):
    if version == 4:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    return socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)


def _echo_request(version, ident, seq):
    payload = b'netplumb.pipework probe'
    if version == 4:
        header = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
        return struct.pack('!BBHHH', 8, 0, _checksum(header + payload), ident, seq) + payload
    return struct.pack('!BBHHH', 128, 0, 0, ident, seq) + payload  # the kernel fills in ICMPv6 checksums


def _is_reply(version, data, ident):
    if version == 4:
        if len(data) < 20:
            return False
        data = data[(data[0] & 0x0f) * 4:]
        want = 0
    else:
        want = 129
    if len(data) < 8:
        return False
    kind, rid = struct.unpack('!BBHHH', data[:8])[0::3]
    return kind == want and rid == ident


def probe(address, window, scope_id=0, neighbour_reachable=None, interval=0.5):
    """ICMP echo to ``address`` until a reply (or, for an on-link address, a confirmed ARP/NDP entry on the
    bridge) within ``window`` seconds. Returns (ok, detail)."""
    ip = ipaddress.ip_address(address)
    ident = os.getpid() & 0xffff
    try:
        sock = _echo_socket(ip.version)
    except (OSError, socket.error) as exc:
        return False, 'cannot open a raw ICMP socket to probe %s: %s' % (address, exc)
    target = (str(ip), 0) if ip.version == 4 else (str(ip), 0, 0, scope_id if ip.is_link_local else 0)
    started = time.monotonic()
    deadline = started + window
    seq = 0
    last_error = None
    try:
        while time.monotonic() < deadline:
            seq += 1
            try:
                sock.sendto(_echo_request(ip.version, ident, seq), target)
            except (OSError, socket.error) as exc:
                last_error = exc.strerror or str(exc)
            until = min(deadline, time.monotonic() + interval)
            while True:
                left = until - time.monotonic()
                if left <= 0:
                    break
                ready = select.select([sock], [], [], left)[0]
                if not ready:
                    break
                try:
                    data, source = sock.recvfrom(4096)
                except (OSError, socket.error) as exc:
                    if exc.errno in (errno.EINTR, errno.EAGAIN):
                        continue
                    raise
                if ipaddress.ip_address(source[0].split('%')[0]) == ip and _is_reply(ip.version, data, ident):
                    return True, '%s answered ICMP echo after %.1f s' % (address, time.monotonic() - started)
            if neighbour_reachable is not None and neighbour_reachable():
                return True, '%s answered ARP/NDP on the bridge after %.1f s (no ICMP echo reply)' % (
                    address, time.monotonic() - started)
    finally:
        sock.close()
    return False, 'no ICMP echo reply and no ARP/NDP answer from %s within %g s%s' % (
        address, window, ' (last error: %s)' % last_error if last_error else '')


def neighbour_checker(ipr, address, ifindex):
    """A callable: is ``address`` a REACHABLE neighbour on ``ifindex`` (it answered ARP/NDP there)?"""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6

    def check():
        try:
            for msg in ipr.get_neighbours(family=family):
                dst = msg.get_attr('NDA_DST')
                if msg['ifindex'] == ifindex and dst and ipaddress.ip_address(dst) == ip \
                        and msg['state'] & NUD_REACHABLE:
                    return True
        except Exception:  # pylint: disable=broad-except
            return False
        return False
    return check
