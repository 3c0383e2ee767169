# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records of docker_veth attachments, so that the persistence agent can re-apply them.

One JSON file per attachment, under a root-only directory::

    <state dir>/attachments/<host id>/<sha256 of (identity, ifname)>.json      (dir 0700, file 0600)

- The state dir is ``$NETPLUMB_STATE_DIR`` or ``/var/lib/netplumb-pipework``.
- The host id is ``$NETPLUMB_HOST_ID`` or the host name (the UTS name). Lab hosts share the root filesystem
  (``/var/lib`` included) but each has its own UTS namespace, so keying the records by host name keeps each
  host's records apart; the agent reads only its own host's directory. Hosts that share a filesystem must
  have distinct host names (or distinct state dirs).
- The key is (container ID or namespace identity, ifname), the same key docker_veth uses for an attachment.
- Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the directory), so a
  reader sees the old record or the new one, never half of one. An unchanged record is not rewritten.

A record holds the normalized parameters a re-apply needs (target, bridge and its resolved type and datapath,
ifname, host_ifname, addresses, gateway, routes, MAC and MTU as they were after the run, VLAN, docker_host,
database_socket). The MAC is the one the container end got, so an attachment that comes back after a restart
keeps its MAC and its peers' ARP caches stay right.

Open vSwitch interfaces also carry the record (without bookkeeping fields) as JSON in
``external_ids:netplumb_config``.

Pure stdlib; used by veth_apply.py (write/forget after a run) and persistence_agent.py (read).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import ipaddress
import json
import os
import re
import socket
import tempfile

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb

ENV_STATE_DIR = 'NETPLUMB_STATE_DIR'
ENV_HOST_ID = 'NETPLUMB_HOST_ID'
DEFAULT_STATE_DIR = '/var/lib/netplumb-pipework'
RECORD_VERSION = 1
EXT_CONFIG = 'netplumb_config'
_SAFE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
# Fields that describe the attachment (what OVS external_ids carry and what a re-apply uses).
CONFIG_FIELDS = ('target_kind', 'target', 'container_id', 'ifname', 'host_ifname', 'host_ifname_explicit',
                 'bridge', 'bridge_type', 'datapath_type', 'bridge_address', 'addresses', 'gateway', 'routes',
                 'mac', 'mtu', 'vlan', 'docker_host', 'database_socket')


def state_dir():
    return os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR


def host_id():
    """This host's name in the store: $NETPLUMB_HOST_ID, else the host name (made filename-safe)."""
    raw = os.environ.get(ENV_HOST_ID) or socket.gethostname() or 'localhost'
    if _SAFE.match(raw) and raw not in ('.', '..'):
        return raw
    cleaned = re.sub(r'[^A-Za-z0-9_.-]', '_', raw)[:40].lstrip('.-_') or 'host'
    return '%s-%s' % (cleaned, hashlib.sha256(raw.encode('utf-8')).hexdigest()[:8])


def record_key(identity, ifname):
    return '%s\0%s' % (identity, ifname)


def file_name(identity, ifname):
    return hashlib.sha256(record_key(identity, ifname).encode('utf-8')).hexdigest()[:40] + '.json'


def makedirs(path):
    """Create path and missing parents with mode 0700; tighten the leaf to 0700 if it is ours and wider."""
    parent = os.path.dirname(path.rstrip('/'))
    if parent and parent != path and not os.path.isdir(parent):
        makedirs(parent)
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    st = os.stat(path)
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, 0o700)


class Store:
    """The records of one host."""

    def __init__(self, root=None, host=None):
        self.root = root or state_dir()
        self.host = host or host_id()
        self.dir = os.path.join(self.root, 'attachments', self.host)
        self._defer_dir_sync = 0     # > 0 inside batch(): one directory fsync at its end
        self._dir_dirty = False

    # ---- reading
    def path(self, identity, ifname):
        return os.path.join(self.dir, file_name(identity, ifname))

    def load(self, identity, ifname):
        return self._read(self.path(identity, ifname))

    @staticmethod
    def _read(path):
        try:
            with open(path) as f:
                data = json.load(f)
        except (IOError, OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get('version') != RECORD_VERSION:
            return None
        data['_path'] = path
        return data

    def records(self):
        """Every readable record of this host (files that do not parse are skipped; see problems())."""
        out = []
        for name in self._names():
            rec = self._read(os.path.join(self.dir, name))
            if rec is not None:
                out.append(rec)
        return out

    def problems(self):
        """Files in this host's directory that are not valid records."""
        return [name for name in self._names() if self._read(os.path.join(self.dir, name)) is None]

    def _names(self):
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        return sorted(n for n in names if n.endswith('.json') and not n.startswith('.'))

    def other_hosts(self):
        """{host id: number of records} for the other hosts that share this state dir."""
        base = os.path.join(self.root, 'attachments')
        found = {}
        try:
            hosts = os.listdir(base)
        except OSError:
            return found
        for h in hosts:
            if h != self.host and os.path.isdir(os.path.join(base, h)):
                found[h] = len([n for n in os.listdir(os.path.join(base, h)) if n.endswith('.json')])
        return found

    # ---- writing
    @contextlib.contextmanager
    def batch(self):
        """Many writes, ONE fsync of the directory at the end (each file is still fsynced before its rename).

        The renames of a batch become durable together; a crash in the middle loses at most records of the
        run that was interrupted, which a re-run writes again.
        """
        self._defer_dir_sync += 1
        try:
            yield self
        finally:
            self._defer_dir_sync -= 1
            if not self._defer_dir_sync and self._dir_dirty:
                self._sync_dir()

    def save(self, record, old=False):
        """Write a record atomically; returns False when an identical record is already there.

        ``old``: the record already read from its file (None if there is none), to save a second read.
        """
        rec = dict((k, v) for k, v in record.items() if not k.startswith('_'))
        rec['version'] = RECORD_VERSION
        rec['host_id'] = self.host
        path = self.path(rec['identity'], rec['ifname'])
        if old is False:
            old = self._read(path)
        elif old is not None:
            old = dict(old)
        if old is not None:
            old.pop('_path', None)
            if dict((k, v) for k, v in old.items() if k != 'recorded_at') == \
                    dict((k, v) for k, v in rec.items() if k != 'recorded_at'):
                return False
        rec['recorded_at'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
        makedirs(self.dir)
        data = json.dumps(rec, sort_keys=True, indent=1).encode('utf-8')
        fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.json', dir=self.dir)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.close(fd)
            fd = None
            os.rename(tmp, path)
        except BaseException:
            if fd is not None:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._sync_dir()
        return True

    def forget(self, identity, ifname):
        return self._unlink(self.path(identity, ifname))

    def forget_record(self, record):
        return self._unlink(record.get('_path') or self.path(record['identity'], record['ifname']))

    def _unlink(self, path):
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        self._sync_dir()
        return True

    def _sync_dir(self):
        if self._defer_dir_sync:
            self._dir_dirty = True
            return
        self._dir_dirty = False
        try:
            fd = os.open(self.dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


# ---- records from a docker_veth run ---------------------------------------------------------------

def config_of(record):
    """The part of a record that describes the attachment (what OVS external_ids carry)."""
    return dict((k, record.get(k)) for k in CONFIG_FIELDS)


def config_json(record):
    return json.dumps(config_of(record), sort_keys=True, separators=(',', ':'))


def _reachable(gateway, addresses):
    try:
        gw = ipaddress.ip_address(gateway)
        ifaces = [ipaddress.ip_interface(a) for a in addresses]
    except ValueError:
        return False
    return any(gw.version == i.version and gw in i.network and gw != i.ip for i in ifaces)


def build_record(params, want, item, prior=None, bridge_datapath=None):
    """The record of one present attachment after a successful run.

    ``want`` is the veth_spec.Attachment, ``item`` its entry of the module result (observed MAC/MTU,
    addresses, VLAN), ``prior`` the record this one replaces (gateway/routes/bridge_address the run left
    unset keep their recorded values).
    """
    prior = prior or {}
    addresses = list(item.get('addresses') or [])
    if want.gateway is not None:
        gateway = str(want.gateway)
    elif want.clear_gateway:
        gateway = None
    else:
        gateway = prior.get('gateway')
    if gateway is not None and not _reachable(gateway, addresses):
        gateway = None  # its subnet went away with an address: the kernel dropped the route too
    if want.routes is not None:
        routes = [{'dest': str(d), 'via': str(v) if v is not None else None} for d, v in want.routes]
    else:
        routes = prior.get('routes')
    if routes:
        routes = [r for r in routes if r.get('via') is None or _reachable(r['via'], addresses)]
    bridge_address = str(want.bridge_address) if want.bridge_address is not None else prior.get('bridge_address')
    if prior.get('bridge') not in (None, want.bridge) and want.bridge_address is None:
        bridge_address = None
    container = want.container
    return {
        'identity': want.identity,
        'target_kind': want.target_kind,
        'target': item.get('target'),
        'container_id': container.id if container is not None else None,
        'ifname': want.ifname,
        'host_ifname': item.get('host_ifname') or want.host_ifname,
        'host_ifname_explicit': bool(want.params.get('host_ifname')),
        'bridge': want.bridge,
        'bridge_type': item.get('bridge_type') or want.resolved_bridge_type,
        'datapath_type': bridge_datapath if (item.get('bridge_type') == 'ovs') else None,
        'bridge_address': bridge_address,
        'addresses': addresses,
        'gateway': gateway,
        'routes': routes,
        'mac': item.get('mac') or None,
        'mtu': item.get('mtu'),
        'vlan': item.get('vlan') or None,
        'docker_host': params.get('docker_host'),
        'database_socket': params.get('database_socket'),
    }


def _matches_target(rec, want):
    """Does a record describe want's target (by container ID/name, netns identity or pid handle)?"""
    if rec.get('ifname') != want.ifname or rec.get('target_kind') != want.target_kind:
        return False
    if want.identity is not None and rec.get('identity') == want.identity:
        return True
    if want.target_kind == 'container':
        names = set([want.target])
        if want.container is not None:
            names.update([want.container.id, want.container.name])
        return rec.get('container_id') in names or rec.get('target') in names
    if want.target_kind == 'pid':
        return rec.get('target') == 'pid:%d' % want.target
    return False


class RecordIndex:
    """Records by every key _matches_target can match on, so a run of N attachments does not scan N records
    N times (identity, container ID and target name; _matches_target has the last word)."""

    def __init__(self, records):
        self.by_key = {}
        for rec in records:
            for key in set([rec.get('identity'), rec.get('container_id'), rec.get('target')]):
                if key is not None:
                    self.by_key.setdefault(key, []).append(rec)

    def matching(self, want):
        keys = [want.identity, want.target]
        if want.target_kind == 'container' and want.container is not None:
            keys += [want.container.id, want.container.name]
        elif want.target_kind == 'pid':
            keys.append('pid:%d' % want.target)
        seen, out = set(), []
        for key in keys:
            for rec in self.by_key.get(key, []) if key is not None else []:
                if id(rec) not in seen and _matches_target(rec, want):
                    seen.add(id(rec))
                    out.append(rec)
        return out


def record_run(params, attachments, results, ovs, vsctl, added_ports=(), store=None):
    """After a successful, non-check run: write records of present attachments, forget absent ones.

    Also forgets records of earlier containers with the same name and ifname (the run purged their
    ports), and puts each OVS attachment's config into its Interface ``external_ids:netplumb_config``
    (one ovs-vsctl call, only when some value differs or the run (re)added the port: ``added_ports``).
    Returns warnings (never raises: the network is
    configured; a record that cannot be written is reported, not fatal).
    """
    warnings = []
    try:
        store = store or Store()
        index = None
        ovs_cmds = []
        with store.batch():
            for want, item in zip(attachments, results):
                needs_scan = want.target_kind == 'container' or want.identity is None
                if needs_scan and index is None:
                    index = RecordIndex(store.records())
                if want.state == 'present':
                    prior = store.load(want.identity, want.ifname)
                    bridge = (ovs.bridges.get(want.bridge) or {}) if ovs is not None else {}
                    datapath = bridge.get('datapath_type') or want.datapath_type
                    rec = build_record(params, want, item, prior, datapath)
                    store.save(rec, old=prior)
                    if want.target_kind == 'container':
                        for old in index.matching(want):
                            # Earlier containers of this name: the run purged their ports, so drop their records.
                            if old.get('identity') != want.identity:
                                store.forget_record(old)
                    if rec['bridge_type'] == 'ovs' and ovs is not None:
                        have = ((ovs.interfaces.get(rec['host_ifname']) or {}).get('external_ids') or {}).get(EXT_CONFIG)
                        text = config_json(rec)
                        if have != text or rec['host_ifname'] in added_ports:
                            ovs_cmds += ovsdb.cmd_set_interface_external_ids(rec['host_ifname'], {EXT_CONFIG: text})
                else:
                    if want.identity is not None:
                        store.forget(want.identity, want.ifname)
                    for old in index.matching(want) if index is not None else []:
                        store.forget_record(old)
        if ovs_cmds and vsctl is not None:
            try:
                vsctl.transact(ovs_cmds)
            except PipeworkError as exc:
                warnings.append('could not copy the attachment records into Open vSwitch external_ids: %s' % exc.msg)
    except (IOError, OSError) as exc:
        warnings.append('could not record the attachments for the persistence agent in %s: %s'
                        % (getattr(store, 'dir', state_dir()), exc))
    return warnings


def reapply_params(records, state='present'):
    """docker_veth parameters that re-apply (or remove) the attachments of one target from its records."""
    items = []
    for rec in records:
        item = {'ifname': rec['ifname'], 'state': state}
        if rec['target_kind'] == 'container':
            item['container'] = rec['container_id']
        elif rec['target_kind'] == 'netns':
            item['netns'] = rec['target']
        else:
            item['pid'] = int(rec['target'].split(':', 1)[1])
        if state == 'absent':
            item['host_ifname'] = rec['host_ifname']
        else:
            if rec.get('host_ifname_explicit'):
                item['host_ifname'] = rec['host_ifname']
            item.update(bridge=rec['bridge'], bridge_type=rec.get('bridge_type') or 'auto',
                        address=list(rec.get('addresses') or []))
            if rec.get('bridge_type') == 'ovs' and rec.get('datapath_type'):
                item['datapath_type'] = rec['datapath_type']
            for key in ('bridge_address', 'gateway', 'mac', 'mtu', 'vlan'):
                if rec.get(key) not in (None, ''):
                    item[key] = rec[key]
            if rec.get('routes') is not None:
                item['routes'] = [dict(dest=r['dest'], via=r.get('via')) for r in rec['routes']]
        items.append(item)
    first = records[0] if records else {}
    return {
        'attachments': items,
        'docker_host': first.get('docker_host'),
        'database_socket': first.get('database_socket'),
        'timeout': 30,
    }
