# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The persistence agent: brings docker_veth attachments back when their containers start again.

docker_veth records every present attachment (attachment_store.py). This agent follows the Docker daemon's
container events and:

- on ``start`` of a container that has records (matched by container ID; with ``--keep-removed`` also by
  name, for a container recreated under the same name), re-applies its attachments with docker_veth's own
  Runner: veth pair, addresses, routes, default route, MAC (the one it had), MTU, bridge port and VLAN tag.
  A stale OVS port left by the previous run of the container is replaced in the same transaction;
- on ``destroy`` (the container was removed), deletes what is left of its attachments (the OVS ports; a host
  veth if its namespace was pinned) and drops its records (``--keep-removed`` keeps them);
- whenever it (re)connects to Docker (at its own start, after dockerd restarted) and every ``--interval``
  seconds, reconciles: every recorded attachment whose target runs and is missing (host veth, container end
  or OVS port gone) is re-applied; records of containers/namespaces that no longer exist are cleaned up;
- retries what failed (OVS down, Docker busy) with a growing delay, up to 10 s between tries.

It only ever acts on the records of its own host (``<state dir>/attachments/<host id>/``, see
attachment_store.py), so several hosts that share one dockerd (the lab) each run their own agent. It listens
to nothing: its only input is the Docker event stream it reads as a client (plus SIGHUP: reconcile now,
SIGTERM/SIGINT: stop). All writes go through the collection's host lock, like the modules.

Run:  python3 -m ansible_collections.netplumb.pipework.plugins.module_utils.veth.agent [options]
      (the persistence role installs a launcher, netplumb-pipework-agent, and a systemd unit where systemd runs)
Needs: Python 3, pyroute2, the Docker SDK for Python, ovs-vsctl for OVS bridges. No other dependency.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

from ansible_collections.netplumb.pipework.plugins.module_utils.veth import store as attachment_store
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.linux import netns as netns_mod

try:
    import docker
    from docker.errors import DockerException, NotFound
    HAS_DOCKER = True
except ImportError:  # pragma: no cover - depends on the host
    HAS_DOCKER = False
    DockerException = NotFound = Exception

try:
    from pyroute2 import IPRoute
    HAS_PYROUTE2 = True
except ImportError:  # pragma: no cover - depends on the host
    HAS_PYROUTE2 = False
    IPRoute = None

LOG = logging.getLogger('netplumb-pipework-agent')
DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock'
RETRY_FIRST = 0.5
RETRY_MAX = 10.0
RETRY_FACTOR = 1.5
RECONNECT_MAX = 2.0


def run_command(argv, timeout=60):
    """Ansible's run_command contract for ovsdb.Vsctl: argv list in, (rc, stdout, stderr) out, no shell."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, '', str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def normalize_docker_host(url):
    url = url or os.environ.get('DOCKER_HOST') or DEFAULT_DOCKER_HOST
    if url.startswith('unix://'):
        return 'unix://' + os.path.realpath(url[len('unix://'):])
    if url.startswith('/'):
        return 'unix://' + os.path.realpath(url)
    return url


class Agent:
    """One host's agent. ``run()`` loops until stop() (or a signal)."""

    def __init__(self, store, docker_host=None, interval=60.0, keep_removed=False, status_path=None):
        self.store = store
        self.docker_host = docker_host
        self.docker_url = normalize_docker_host(docker_host)
        self.interval = interval
        self.keep_removed = keep_removed
        self.status_path = status_path
        self.events = queue.Queue()
        self.stopping = threading.Event()
        self.reconcile_requested = False
        self.pending = {}  # container ID or record identity -> [due, delay, why, container_ref, records]
        self.connected = False
        self.next_periodic = None
        self._cache = (None, [])  # ((dir mtime_ns, inode) of the last trusted read, its records)
        self.stats = {'reconciles': 0, 'applied': 0, 'removed': 0, 'failures': 0, 'events': 0,
                      'last_apply_seconds': None, 'last_lock_wait': None}
        self._thread = None
        self._told_others = False
        self.lock_wait = 0.0  # seconds the last re-apply waited for the host lock (other runs)

    # ---- records ---------------------------------------------------------------------------------
    def _records(self):
        """The store's records, re-read only when the directory changed (every write renames into it)."""
        try:
            st = os.stat(self.store.dir)
            stamp = (st.st_mtime_ns, st.st_ino)
        except OSError:
            return []
        if self._cache[0] == stamp:
            return self._cache[1]
        records = self.store.records()
        # A write in the same clock tick as this read would not move the mtime: trust the cache only
        # when the directory was last changed well before this read ("racy git").
        trusted = time.time() - st.st_mtime_ns / 1e9 > 0.1
        self._cache = (stamp if trusted else None, records)
        return records

    def my_records(self):
        """This host's records that this agent serves (container records of its Docker daemon)."""
        out = []
        for rec in self._records():
            if rec.get('target_kind') == 'container' and normalize_docker_host(rec.get('docker_host')) != self.docker_url:
                continue
            out.append(rec)
        return out

    # ---- Docker ----------------------------------------------------------------------------------
    def _client(self, timeout=10):
        kwargs = {'version': 'auto', 'timeout': timeout, 'base_url': self.docker_url}
        return docker.APIClient(**kwargs)

    def _follow_events(self):
        """Thread: subscribe to container events, queue them; reconnect with backoff when Docker goes away."""
        delay = 0.1
        while not self.stopping.is_set():
            client = None
            try:
                client = self._client()
                stream = client.events(decode=True, filters={'type': 'container', 'event': ['start', 'destroy']})
                # Subscribed before the reconcile runs: nothing that happens meanwhile is missed.
                self.events.put(('connected', None))
                delay = 0.1
                for event in stream:
                    self.events.put(('event', event))
                    if self.stopping.is_set():
                        break
                self.events.put(('disconnected', 'the event stream ended'))
            except Exception as exc:  # pylint: disable=broad-except  # any failure means: reconnect
                self.events.put(('disconnected', str(exc)))
            finally:
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # pylint: disable=broad-except
                        pass
            self.stopping.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _inspect(self, client, ref):
        try:
            return client.inspect_container(ref)
        except NotFound:
            return None

    # ---- applying --------------------------------------------------------------------------------
    def _runner(self, params, record=True):
        # Imported here so that --help and --list work without pyroute2.
        from ansible_collections.netplumb.pipework.plugins.module_utils.veth import apply as veth_apply  # pylint: disable=import-outside-toplevel
        if getattr(veth_apply.host_lock, 'agent', None) is not self:
            veth_apply.host_lock = self._timed_lock(veth_apply.host_lock)
        return veth_apply.Runner(params, False, run_command, ovs_available=shutil.which('ovs-vsctl') is not None,
                                 record=record)

    def _timed_lock(self, lock):
        """The Runner's host lock, timed: the log tells waiting for other runs from the agent's own work."""
        original = getattr(lock, 'original', lock)

        @contextlib.contextmanager
        def timed(*args, **kwargs):
            started = time.monotonic()
            with original(*args, **kwargs):
                self.lock_wait += time.monotonic() - started
                yield
        timed.agent = self
        timed.original = original
        return timed

    def apply(self, records, why, container_ref=None):
        """Re-apply records of one target; True when done (or nothing to do), False to retry later."""
        if not records:
            return True
        params = attachment_store.reapply_params(records)
        if container_ref is not None:
            for item in params['attachments']:
                item['container'] = container_ref
        label = records[0].get('target')
        started = time.monotonic()
        self.lock_wait = 0.0
        try:
            self.clear_stale_ports(records, container_ref)
            LOG.debug('%s: stale OVS ports checked after %.3f s', why, time.monotonic() - started)
            result = self._runner(params).run()
        except Exception as exc:  # pylint: disable=broad-except  # logged, retried; the agent keeps running
            msg = _text(exc)
            if len(records) > 1:
                LOG.warning('%s: re-applying %d attachments of %s together failed (%s); trying one by one',
                            why, len(records), label, msg)
                results = [self.apply([r], why, container_ref) for r in records]  # every one is tried
                return all(results)
            self.stats['failures'] += 1
            LOG.error('%s: could not re-apply %s %s (%s): %s', why, label, records[0]['ifname'],
                      records[0].get('host_ifname'), msg)
            return False
        took = time.monotonic() - started
        changed = [a for a in result['attachments'] if a['changed']]
        for w in result.get('warnings') or []:
            LOG.warning('%s: %s', why, w)
        if changed:
            self.stats['applied'] += len(changed)
            self.stats['last_apply_seconds'] = round(took, 4)
            self.stats['last_lock_wait'] = round(self.lock_wait, 4)
            what = '; '.join('%s %s (%s)' % (a['ifname'], a['action'], ', '.join(a['changes'])) for a in changed)
            LOG.info('%s: re-applied %d attachment(s) of %s in %.3f s (%.3f s of it waiting for the host lock): %s',
                     why, len(changed), label, took, self.lock_wait, what)
        return True

    def remove(self, records, why):
        """Clean up after a target that no longer exists: OVS ports, leftover host veths, the records."""
        if not records:
            return True
        if any(r.get('bridge_type') == 'ovs' for r in records):
            db = records[0].get('database_socket')
            try:
                ovsdb.Vsctl(run_command, db, 10).read_state()
            except PipeworkError as exc:
                LOG.warning('%s: Open vSwitch is not reachable (%s); will retry the clean-up', why, exc.msg)
                return False
        keep = self.keep_removed and records[0].get('target_kind') == 'container'
        params = attachment_store.reapply_params(records, state='absent')
        for item, rec in zip(params['attachments'], records):
            # A derived host_ifname belongs to this target alone; an explicit one may be reused by now.
            if rec.get('host_ifname_explicit'):
                item.pop('host_ifname', None)
        try:
            result = self._runner(params, record=not keep).run()
        except Exception as exc:  # pylint: disable=broad-except  # logged, retried
            self.stats['failures'] += 1
            LOG.error('%s: could not clean up after %s: %s', why, records[0].get('target'), _text(exc))
            return False
        if not keep:
            for rec in records:  # the Runner forgot them already; make sure
                self.store.forget_record(rec)
        done = [a for a in result['attachments'] if a['changed']]
        if done or not keep:
            self.stats['removed'] += len(records)
            LOG.info('%s: removed %d leftover(s) of %s%s', why, len(done), records[0].get('target'),
                     ' (records kept)' if keep else ', dropped %d record(s)' % len(records))
        return True

    def clear_stale_ports(self, records, container_ref=None):
        """Delete the OVS ports of attachments whose container end is gone, in a transaction of their own.

        ovs-vswitchd (userspace datapath) keeps its open device when a port is deleted and added again
        under the same name in ONE transaction (what a re-apply does), so the recreated veth would pass no
        traffic. A port deleted in an earlier transaction is opened afresh when the re-apply adds it (with
        its tag, in one step). After a restart the old host veth may still exist for a moment (the kernel
        destroys the old namespace asynchronously), so "gone" is judged by the container end.
        """
        from ansible_collections.netplumb.pipework.plugins.module_utils.common.host_lock import host_lock  # pylint: disable=import-outside-toplevel
        ovs_records = [r for r in records if r.get('bridge_type') == 'ovs' and r.get('host_ifname')]
        if not ovs_records:
            return
        ns_path = self._ns_path_of(ovs_records[0], container_ref)
        if ns_path is None:
            return  # not running: the Runner reports it
        vsctl = ovsdb.Vsctl(run_command, ovs_records[0].get('database_socket'), 10)
        waited = time.monotonic()
        with host_lock():  # a docker_veth run must not create the veth between the check and the delete
            self.lock_wait += time.monotonic() - waited
            try:
                ns = netns_mod.Namespace(ns_path, ovs_records[0].get('target'))
            except PipeworkError:
                return  # it stopped meanwhile
            try:
                ipr = netns_mod.iproute_in(ns, IPRoute)
                try:
                    present = set(r['ifname'] for r in ovs_records if ipr.link_lookup(ifname=r['ifname']))
                finally:
                    ipr.close()
            finally:
                ns.close()
            state = vsctl.read_state()
            stale = [state.port_of_interface(r['host_ifname']) for r in ovs_records
                     if r['ifname'] not in present and state.port_of_interface(r['host_ifname'])]
            if stale:
                vsctl.transact([c for name in stale for c in ovsdb.cmd_del_port(name)])
        LOG.debug('deleted stale OVS port(s): %s', ', '.join(stale) or 'none')

    def _ns_path_of(self, rec, container_ref=None):
        kind = rec.get('target_kind')
        if kind == 'netns':
            return netns_mod.netns_path(rec['target'])
        if kind == 'pid':
            return '/proc/%s/ns/net' % rec['target'].split(':', 1)[1]
        client = self._client()
        try:
            info = self._inspect(client, container_ref or rec['container_id'])
        finally:
            client.close()
        state = (info or {}).get('State') or {}
        if not state.get('Running') or not state.get('Pid'):
            return None
        return '/proc/%d/ns/net' % state['Pid']

    # ---- the checks ------------------------------------------------------------------------------
    def in_place(self, rec, ns_path, ovs):
        """Is the attachment there: host veth, container end, OVS port on its bridge (or Linux master)?"""
        host = IPRoute()
        try:
            found = host.link_lookup(ifname=rec['host_ifname'])
            if not found:
                return False
            link = host.get_links(found[0])[0]
            if rec.get('bridge_type') == 'linux':
                master = link.get_attr('IFLA_MASTER')
                bridge = host.link_lookup(ifname=rec['bridge'])
                if not master or not bridge or master != bridge[0]:
                    return False
        finally:
            host.close()
        if rec.get('bridge_type') == 'ovs':
            if ovs is None:
                return False  # OVS unreachable: the re-apply fails and is retried until it is back
            port = ovs.port_of_interface(rec['host_ifname'])
            iface = ovs.interfaces.get(rec['host_ifname']) or {}
            if not port or ovs.ports[port]['bridge'] != rec['bridge'] or iface.get('error') \
                    or iface.get('ofport') in (None, -1):
                return False
        ns = netns_mod.Namespace(ns_path, rec.get('target'))
        try:
            ipr = netns_mod.iproute_in(ns, IPRoute)
            try:
                return bool(ipr.link_lookup(ifname=rec['ifname']))
            finally:
                ipr.close()
        finally:
            ns.close()

    def _ovs_state(self, records):
        if not any(r.get('bridge_type') == 'ovs' for r in records):
            return None
        try:
            return ovsdb.Vsctl(run_command, records[0].get('database_socket'), 10).read_state()
        except PipeworkError:
            return None

    # ---- reconcile ------------------------------------------------------------------------------
    def reconcile(self, why, only=None):
        """Every record (or those of target ``only``): re-apply missing attachments of running targets,
        clean up after gone targets. Returns the keys of targets that failed (scheduled for a retry unless
        ``only`` is given: then the caller does)."""
        started = time.monotonic()
        self.stats['reconciles'] += 1
        records = self.my_records()
        groups = {}
        for rec in records:
            key = rec.get('container_id') if rec.get('target_kind') == 'container' else rec.get('identity')
            if only is None or key == only:
                groups.setdefault(key, []).append(rec)
        ovs_by_db = {}
        client = None
        fixed = gone = 0
        failed = set()
        try:
            for key, recs in sorted(groups.items(), key=lambda kv: str(kv[0])):
                kind = recs[0].get('target_kind')
                ns_path = None
                ok = True
                if kind == 'container':
                    if client is None:
                        client = self._client()
                    info = self._inspect(client, key)
                    if info is None:
                        gone += 1
                        if not self._settle_gone_container(client, recs, why):
                            failed.add(key)
                        continue
                    state = info.get('State') or {}
                    if not state.get('Running') or not state.get('Pid'):
                        continue  # stopped: its start event brings the attachments back
                    ns_path = '/proc/%d/ns/net' % state['Pid']
                elif kind == 'netns':
                    ns_path = netns_mod.netns_path(recs[0]['target'])
                    if not os.path.exists(ns_path):
                        gone += 1
                        ok = self.remove(recs, why)
                else:
                    ns_path = '/proc/%s/ns/net' % recs[0]['target'].split(':', 1)[1]
                    if _ns_key(ns_path) != key:
                        gone += 1  # the process exited (or its PID now names another namespace)
                        ok = self.remove(recs, why)
                if not ok:
                    failed.add(key)
                if ns_path is None or not ok or (kind != 'container' and not os.path.exists(ns_path)):
                    continue
                db = recs[0].get('database_socket')
                if db not in ovs_by_db:
                    ovs_by_db[db] = self._ovs_state(recs)
                try:
                    missing = [r for r in recs if not self.in_place(r, ns_path, ovs_by_db[db])]
                except (PipeworkError, OSError) as exc:
                    LOG.debug('%s: cannot check %s: %s', why, recs[0].get('target'), exc)
                    continue  # it went away meanwhile: its events tell
                if missing:
                    fixed += 1
                    if not self.apply(recs, why):
                        failed.add(key)
        except DockerException as exc:
            LOG.warning('%s: Docker is not reachable (%s); reconciling again once it is', why, exc)
        finally:
            if client is not None:
                client.close()
        if only is None:
            LOG.info('%s: reconciled %d record(s) of %d target(s) in %.3f s (%d re-applied, %d gone, %d failed)',
                     why, len(records), len(groups), time.monotonic() - started, fixed, gone, len(failed))
            for key in failed:
                self._schedule(key, 'reconcile %s' % groups[key][0].get('target'))
            others = self.store.other_hosts()
            if others and not self._told_others:
                self._told_others = True
                LOG.info('records of other hosts in %s are not mine and left alone: %s', self.store.root,
                         ', '.join('%s (%d)' % kv for kv in sorted(others.items())))
        self.write_status()
        return failed

    def _settle_gone_container(self, client, recs, why):
        """A recorded container no longer exists (a destroy event this agent did not see)."""
        if self.keep_removed:
            name = recs[0].get('target')
            info = self._inspect(client, name) if name else None
            if info is not None and (info.get('State') or {}).get('Running'):
                return self.apply(recs, why + ' (recreated %s)' % name, container_ref=info['Id'])
        return self.remove(recs, why)

    # ---- events ---------------------------------------------------------------------------------
    def on_event(self, event):
        self.stats['events'] += 1
        action = event.get('Action') or event.get('status')
        cid = event.get('id') or (event.get('Actor') or {}).get('ID')
        name = ((event.get('Actor') or {}).get('Attributes') or {}).get('name')
        records = [r for r in self.my_records() if r.get('target_kind') == 'container']
        mine = [r for r in records if r.get('container_id') == cid]
        if action == 'start':
            why = 'container %s started' % (name or cid[:12])
            if mine:
                self.pending.pop(cid, None)
                if not self.apply(mine, why):
                    self._schedule(cid, why)
                elif event.get('timeNano'):
                    LOG.info('%s: in place %.3f s after the event', why, time.time() - event['timeNano'] / 1e9)
            elif self.keep_removed and name:
                same_name = [r for r in records if r.get('target') == name and r.get('container_id') != cid]
                if same_name and not self.apply(same_name, why + ' (recreated)', container_ref=cid):
                    self._schedule(cid, why, container_ref=cid, records=same_name)
        elif action == 'destroy' and mine:
            why = 'container %s removed' % (name or cid[:12])
            self.pending.pop(cid, None)
            if not self.remove(mine, why):
                self._schedule(cid, why)
        self.write_status()

    # ---- retries --------------------------------------------------------------------------------
    def _schedule(self, key, why, container_ref=None, records=None):
        entry = self.pending.get(key)
        delay = RETRY_FIRST if entry is None else min(entry[1] * RETRY_FACTOR, RETRY_MAX)
        self.pending[key] = [time.monotonic() + delay, delay, why, container_ref, records]
        LOG.info('%s: retrying in %.1f s', why, delay)

    def _run_due(self):
        """Retry what failed: a reconcile of just that target (which also notices it went away)."""
        now = time.monotonic()
        for key in [k for k, v in self.pending.items() if v[0] <= now]:
            _due, _delay, why, container_ref, records = self.pending[key]
            if records:
                ok = self.apply(records, 'retry: ' + why, container_ref=container_ref)
            else:
                ok = not self.reconcile('retry: ' + why, only=key)
            if ok:
                self.pending.pop(key, None)
                LOG.info('retry: %s: done', why)
            else:
                self._schedule(key, why, container_ref, records)

    # ---- status ---------------------------------------------------------------------------------
    def write_status(self):
        if not self.status_path:
            return
        status = dict(self.stats, pid=os.getpid(), host_id=self.store.host, state_dir=self.store.root,
                      docker_host=self.docker_url, connected=self.connected, pending=len(self.pending),
                      updated=time.time())
        tmp = '%s.tmp.%d' % (self.status_path, os.getpid())
        try:
            with open(tmp, 'w') as f:
                json.dump(status, f, sort_keys=True)
            os.replace(tmp, self.status_path)
        except (IOError, OSError) as exc:
            LOG.debug('cannot write status %s: %s', self.status_path, exc)

    # ---- main loop ------------------------------------------------------------------------------
    def stop(self, *_args):
        self.stopping.set()

    def request_reconcile(self, *_args):
        self.reconcile_requested = True

    def run(self):
        LOG.info('agent %d: host %s, records in %s, Docker at %s, reconcile every %s', os.getpid(), self.store.host,
                 self.store.dir, self.docker_url, '%g s' % self.interval if self.interval else 'never (events only)')
        self._thread = threading.Thread(target=self._follow_events, name='docker-events', daemon=True)
        self._thread.start()
        self.write_status()
        outage = None
        while not self.stopping.is_set():
            timeout = 1.0
            if self.pending:
                timeout = max(0.0, min(timeout, min(v[0] for v in self.pending.values()) - time.monotonic()))
            try:
                kind, payload = self.events.get(timeout=timeout)
            except queue.Empty:
                kind, payload = None, None
            if kind == 'connected':
                self.connected = True
                if outage is not None:
                    LOG.info('Docker is back after %.1f s', time.monotonic() - outage)
                outage = None
                self.reconcile('connected to Docker')
                self.next_periodic = time.monotonic() + self.interval if self.interval else None
            elif kind == 'disconnected':
                if self.connected or outage is None:
                    LOG.warning('lost Docker at %s (%s); reconnecting', self.docker_url, payload)
                    outage = time.monotonic()
                self.connected = False
                self.write_status()
            elif kind == 'event':
                try:
                    self.on_event(payload)
                except Exception:  # pylint: disable=broad-except  # one bad event must not end the agent
                    LOG.exception('event %s failed', payload.get('Action'))
            if self.connected and self.reconcile_requested:
                self.reconcile_requested = False
                self.reconcile('SIGHUP')
            if self.connected and self.next_periodic is not None and time.monotonic() >= self.next_periodic:
                self.reconcile('periodic check')
                self.next_periodic = time.monotonic() + self.interval
            if self.connected and self.pending:
                self._run_due()
        LOG.info('agent %d: stopping', os.getpid())
        self.write_status()
        return 0


def _text(exc):
    return getattr(exc, 'msg', None) or '%s: %s' % (type(exc).__name__, exc)


def _ns_key(path):
    """The identity docker_veth gives a pid target's namespace ('netns-inode:DEV:INO'), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return 'netns-inode:%d:%d' % (st.st_dev, st.st_ino)


# ---- command line ---------------------------------------------------------------------------------

def _parser():
    p = argparse.ArgumentParser(prog='netplumb-pipework-agent',
                                description='Re-applies netplumb.pipework docker_veth attachments when their '
                                            'containers start again; cleans up after removed containers.')
    p.add_argument('--state-dir', help='record store (default $%s or %s)'
                   % (attachment_store.ENV_STATE_DIR, attachment_store.DEFAULT_STATE_DIR))
    p.add_argument('--host-id', help='this host\'s id in the store (default $%s or the host name)'
                   % attachment_store.ENV_HOST_ID)
    p.add_argument('--docker-host', help='Docker daemon URL (default $DOCKER_HOST or %s)' % DEFAULT_DOCKER_HOST)
    p.add_argument('--interval', type=float, default=60.0,
                   help='seconds between checks that recorded attachments are in place (0: only on events)')
    p.add_argument('--keep-removed', action='store_true',
                   help='keep the records of removed containers: a container recreated under the same name '
                        'gets its attachments back')
    p.add_argument('--log-file', help='log here as well as to stderr (default with --daemon: '
                                      '<state dir>/agents/<host id>.log)')
    p.add_argument('--log-level', default='info', choices=['debug', 'info', 'warning', 'error'])
    p.add_argument('--pidfile', help='held locked while the agent runs, so one agent runs per host and store '
                                     '(default <state dir>/agents/<host id>.pid)')
    p.add_argument('--status-file', help='counters and the connection state as JSON '
                                         '(default <state dir>/agents/<host id>.json)')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--daemon', action='store_true',
                      help='detach (new session, no terminal) and print "started PID", or "running PID" when an '
                           'agent already runs')
    mode.add_argument('--stop', action='store_true', help='stop the running agent (SIGTERM, then SIGKILL) and exit')
    mode.add_argument('--once', action='store_true', help='reconcile once and exit (no event following)')
    mode.add_argument('--list', action='store_true', help='print this host\'s records as JSON and exit')
    return p


def _lock_pidfile(path):
    """Open and lock the pidfile; returns the fd, or raises OSError(EAGAIN) if another agent holds it."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        attachment_store.makedirs(directory)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, ('%d\n' % os.getpid()).encode('ascii'))
    return fd


def _running_agent(path):
    """PID of the agent that holds the pidfile's lock, or 0."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    except OSError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            data = os.read(fd, 64).decode('ascii', 'replace').strip()
            return int(data) if data.isdigit() else 0
        return 0  # nobody holds it: no agent
    finally:
        os.close(fd)


def _say(text, stream=None):
    """One line to stdout (or stderr): what --daemon/--stop/--list report to the role and to people."""
    stream = stream or sys.stdout
    stream.write(text + '\n')
    stream.flush()


def _stop(pidfile, timeout=15.0):
    pid = _running_agent(pidfile)
    if not pid:
        _say('not running')
        return 0
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _running_agent(pidfile) == pid:
            time.sleep(0.05)
        if _running_agent(pidfile) != pid:
            break
    if _running_agent(pidfile) == pid:
        _say('failed: agent %d did not stop' % pid)
        return 1
    _say('stopped %d' % pid)
    return 0


def _daemonize(pidfile):
    """Double fork. The first process prints "started PID" (or "running PID") and exits; returns the lock fd."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end) as f:
            said = f.read().strip()
        os.waitpid(pid, 0)
        _say(said or 'failed: the agent did not start (see its log)')
        os._exit(0 if said.startswith(('started', 'running')) else 1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    report = os.fdopen(write_end, 'w')
    try:
        lock = _lock_pidfile(pidfile)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            report.write('running %d\n' % _running_agent(pidfile))
        else:
            report.write('failed: pidfile %s: %s\n' % (pidfile, exc))
        report.close()
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    os.chdir('/')
    os.umask(0o022)
    report.write('started %d\n' % os.getpid())
    report.close()
    return lock


def main(argv=None):
    args = _parser().parse_args(argv)
    # The Runner's own record writes (attachment_store.Store()) read the same environment.
    if args.state_dir:
        os.environ[attachment_store.ENV_STATE_DIR] = os.path.abspath(args.state_dir)
    if args.host_id:
        os.environ[attachment_store.ENV_HOST_ID] = args.host_id
    store = attachment_store.Store()
    own = os.path.join(store.root, 'agents', store.host)
    pidfile = args.pidfile or own + '.pid'
    if args.list:
        _say(json.dumps(store.records(), indent=1, sort_keys=True))
        return 0
    if args.stop:
        return _stop(pidfile)
    missing = [n for n, ok in (('the Docker SDK for Python', HAS_DOCKER), ('pyroute2', HAS_PYROUTE2)) if not ok]
    if missing:
        _say('netplumb-pipework-agent: %s missing (the prerequisites role installs them)' % ' and '.join(missing),
             sys.stderr)
        return 2
    lock = None
    if args.daemon:
        lock = _daemonize(pidfile)
    elif not args.once:
        try:
            lock = _lock_pidfile(pidfile)
        except OSError:
            _say('netplumb-pipework-agent: another agent (pid %d) holds %s' % (_running_agent(pidfile), pidfile),
                 sys.stderr)
            return 1
    handlers = [] if args.daemon else [logging.StreamHandler(sys.stderr)]
    log_file = args.log_file or (own + '.log' if args.daemon else None)
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter('%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s'))
        LOG.addHandler(h)
    LOG.setLevel(getattr(logging, args.log_level.upper()))
    status = args.status_file or own + '.json'
    try:
        attachment_store.makedirs(os.path.dirname(status))
    except OSError:
        status = None
    agent = Agent(store, docker_host=args.docker_host, interval=args.interval, keep_removed=args.keep_removed,
                  status_path=None if args.once else status)
    if args.once:
        agent.reconcile('one-shot reconcile')
        return 1 if agent.pending else 0
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGHUP, agent.request_reconcile)
    try:
        return agent.run()
    finally:
        if lock is not None:
            os.close(lock)


if __name__ == '__main__':
    raise SystemExit(main())
