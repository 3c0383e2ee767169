"""Issue 7, leak test: 1000 attachments created and removed on one host, then nothing may be left.

Targets are network namespaces (``ip netns add``, one file and one bind mount each under /run/netns),
attached in ONE docker_veth task and removed in ONE docker_veth task:

- variant ``ovs``: an Open vSwitch bridge (netdev datapath) of a private ovsdb-server/ovs-vswitchd whose
  vswitchd runs in a throwaway host namespace, where the module runs too (``database_socket``), each port
  tagged. Private, so neither the root namespace's links nor the root OVS see 1000 ports come and go (and
  other tests' link changes cannot interrupt the module's netlink dumps);
- variant ``linux``: a Linux bridge inside a throwaway host namespace; the module runs there, under a soft
  limit of 1024 open files (the common default; a batch holds about six descriptors per target namespace).

After the removal: none of the 1000 host veths is left (and the host namespace's links, addresses and
routes are as before, for the ``linux`` variant exactly), no OVS port is left on the bridge and no Interface
row names a test target, no process holds a test namespace (``/proc/*/ns/net`` and ``/proc/*/fd/*`` are
scanned for their inodes), the only mounts under /run/netns of the test are the ones ``ip netns add`` made
(and none after ``ip netns del``, which must succeed for each), and docker_veth's record store holds no
record. Counts and wall times are printed and written to bench/results/leaks.json; no assertion on duration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import relsnap
from nphelpers import REPO, run, run_module, suffix

MODULE = 'netplumb.pipework.docker_veth'
N = int(os.environ.get('NP_LEAK_N', '1000'))
RESULTS = os.path.join(REPO, 'bench', 'results', 'leaks.json')


def ip_batch(lines, netns=None):
    """Many ``ip`` commands in one process (ip -force -batch: go on after an error, report each)."""
    argv = ['ip', '-force', '-batch', '-']
    if netns:
        argv = ['ip', 'netns', 'exec', netns] + argv
    return subprocess.run(argv, input=''.join(line + '\n' for line in lines), text=True, capture_output=True,
                          check=False)


def netns_mounts(prefix):
    """Mount points under /run/netns/ whose name starts with prefix (from this process's mountinfo)."""
    found = []
    with open('/proc/self/mountinfo') as f:
        for line in f:
            mount_point = line.split()[4]
            if mount_point.startswith('/run/netns/' + prefix):
                found.append(mount_point)
    return found


def namespace_holders(inodes):
    """Processes that hold one of the namespace inodes: as their namespace or as an open fd."""
    wanted = set('net:[%d]' % i for i in inodes)
    holders = []
    me = str(os.getpid())
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        paths = ['/proc/%s/ns/net' % pid]
        try:
            paths += [os.path.join('/proc', pid, 'fd', fd) for fd in os.listdir('/proc/%s/fd' % pid)]
        except OSError:
            pass
        for path in paths:
            try:
                target = os.readlink(path)
            except OSError:
                continue
            if target in wanted:
                holders.append('%s%s %s -> %s' % (pid, ' (pytest)' if pid == me else '', path, target))
    return holders


def vsctl(db, *argv):
    return run(['ovs-vsctl', '--timeout=60', '--db=%s' % db] + list(argv))


def bridge_ports(db, bridge):
    return sorted(vsctl(db, 'list-ports', bridge).stdout.split())


def interfaces_naming(db, targets):
    doc = json.loads(vsctl(db, '--format=json', '--columns=name,external_ids', 'list', 'Interface').stdout)
    rows = [dict(zip(doc['headings'], row)) for row in doc['data']]
    wanted = set(targets)
    hits = []
    for row in rows:
        ids = dict(row['external_ids'][1])
        if ids.get('netplumb_target') in wanted:
            hits.append(row['name'])
    return hits


def record_files(state_dir):
    out = []
    for root, dummy, files in os.walk(state_dir):
        out += [os.path.join(root, f) for f in files if f.endswith('.json') and not f.startswith('.')]
    return out


def save_result(variant, data):
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    try:
        with open(RESULTS) as f:
            doc = json.load(f)
    except (IOError, ValueError):
        doc = {}
    doc[variant] = data
    with open(RESULTS, 'w') as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    print('\nleaks[%s]: %s' % (variant, json.dumps(data, sort_keys=True)))


class Targets:
    """N throwaway namespaces npleak<sfx>NNNN (created and deleted with one ip -batch each)."""

    def __init__(self, n):
        self.prefix = 'npleak%s' % suffix()
        self.names = ['%s%04d' % (self.prefix, i) for i in range(n)]
        self.deleted = False

    def create(self):
        started = time.monotonic()
        proc = ip_batch(['netns add %s' % n for n in self.names])
        assert proc.returncode == 0, proc.stderr[-2000:]
        self.create_seconds = round(time.monotonic() - started, 2)
        self.inodes = [os.stat('/run/netns/%s' % n).st_ino for n in self.names]

    def delete(self):
        proc = ip_batch(['netns del %s' % n for n in self.names])
        self.deleted = True
        return proc

    def cleanup(self):
        if not self.deleted:
            self.delete()
        for n in self.names:  # whatever ip -batch could not delete (a test already failed then)
            if os.path.exists('/run/netns/%s' % n):
                run(['ip', 'netns', 'del', n], check=False)


class PrivateOvs:
    """ovsdb-server (root namespace, a unix socket in a temporary directory) and ovs-vswitchd (in ``netns``).

    OVS_RUNDIR/OVS_LOGDIR/OVS_DBDIR point at the temporary directory, so nothing lands in the root OVS's
    directories; both daemons are stopped by the PIDs in their pidfiles.
    """

    def __init__(self, netns):
        self.netns = netns
        self.dir = tempfile.mkdtemp(prefix='np-leak-ovs-')
        self.db = 'unix:%s/db.sock' % self.dir
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir, OVS_DBDIR=self.dir)
        self.pidfiles = []

    def _daemon(self, argv, name):
        pidfile = os.path.join(self.dir, name + '.pid')
        self.pidfiles.append(pidfile)
        subprocess.run(argv + ['--pidfile=%s' % pidfile, '--unixctl=%s/%s.ctl' % (self.dir, name),
                               '--log-file=%s/%s.log' % (self.dir, name), '--detach', '--no-chdir',
                               '-vconsole:emer', '-vsyslog:off'], env=self.env, check=True, capture_output=True)

    def start(self):
        conf = os.path.join(self.dir, 'conf.db')
        subprocess.run(['ovsdb-tool', 'create', conf, '/usr/share/openvswitch/vswitch.ovsschema'], check=True,
                       capture_output=True)
        self._daemon(['ovsdb-server', conf, '--remote=punix:%s/db.sock' % self.dir], 'ovsdb-server')
        # TSO before vswitchd starts (it reads it once), as scripts/services.sh does for the root OVS.
        vsctl(self.db, '--no-wait', 'init', '--', 'set', 'Open_vSwitch', '.', 'other_config:userspace-tso-enable=true')
        self._daemon(['ip', 'netns', 'exec', self.netns, 'ovs-vswitchd', self.db], 'ovs-vswitchd')

    def stop(self):
        for pidfile in reversed(self.pidfiles):
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
            except (IOError, ValueError):
                continue
            for sig in (15, 15, 15, 9):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                for dummy in range(50):
                    if not os.path.exists('/proc/%d' % pid):
                        break
                    time.sleep(0.1)
                else:
                    continue
                break
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def targets():
    t = Targets(N)
    with relsnap.sigterm_raises():
        try:
            t.create()
            yield t
        finally:
            t.cleanup()


@pytest.fixture
def state_dir():
    path = tempfile.mkdtemp(prefix='np-leak-state-')
    yield path
    shutil.rmtree(path, ignore_errors=True)


def address_of(i):
    return '10.200.%d.%d/16' % (i // 250, i % 250 + 1)


def run_both_ways(targets, params, state_dir, netns=None, extra=None, nofile=None):
    """One task attaching every target, one removing every attachment; returns (create, remove, figures)."""
    os.environ['NETPLUMB_STATE_DIR'] = state_dir
    try:
        items = [dict({'netns': n, 'address': [address_of(i)]}, **(extra or {})) for i, n in enumerate(targets.names)]
        started = time.monotonic()
        failed, created = run_module(MODULE, dict(params, attachments=items), netns=netns, nofile=nofile)
        create_wall = time.monotonic() - started
        assert not failed, str(created)[:3000]
        assert len(created['attachments']) == len(targets.names)
        assert all(a['action'] == 'created' for a in created['attachments']), \
            [a for a in created['attachments'] if a['action'] != 'created'][:3]
        records_after_create = len(record_files(state_dir))
        mounts_after_create = len(netns_mounts(targets.prefix))
        started = time.monotonic()
        remove = dict((k, v) for k, v in params.items() if k == 'database_socket')
        remove['attachments'] = [{'netns': n, 'state': 'absent'} for n in targets.names]
        failed, removed = run_module(MODULE, remove, netns=netns, nofile=nofile)
        remove_wall = time.monotonic() - started
        assert not failed, str(removed)[:3000]
        assert all(a['action'] == 'removed' for a in removed['attachments']), \
            [a for a in removed['attachments'] if a['action'] != 'removed'][:3]
    finally:
        os.environ.pop('NETPLUMB_STATE_DIR', None)
    figures = {
        'attachments': len(targets.names),
        'netns_create_seconds': targets.create_seconds,
        'create_wall_seconds': round(create_wall, 2), 'create_module_seconds': created.get('elapsed'),
        'remove_wall_seconds': round(remove_wall, 2), 'remove_module_seconds': removed.get('elapsed'),
        'records_after_create': records_after_create,
        'netns_mounts_after_create': mounts_after_create,
    }
    return created, removed, figures


def assert_nothing_left(targets, state_dir, host_ifnames, links_now, figures):
    """The common leak checks; fills figures with the counts it found."""
    leaked_links = sorted(set(host_ifnames) & set(links_now))
    holders = namespace_holders(targets.inodes)
    mounts = netns_mounts(targets.prefix)
    records = record_files(state_dir)
    figures.update({'leaked_veths': len(leaked_links), 'namespace_holders': len(holders),
                    'netns_mounts_before_del': len(mounts), 'records_left': len(records)})
    assert figures['records_after_create'] == len(targets.names), 'docker_veth did not record every attachment'
    assert not leaked_links, 'host veths left: %s' % leaked_links[:10]
    assert not holders, 'processes still hold test namespaces: %s' % holders[:10]
    # Exactly the mounts `ip netns add` made: the module added none (and removed none).
    assert len(mounts) == len(targets.names) == figures['netns_mounts_after_create'], len(mounts)
    assert not records, 'records left: %s' % records[:5]
    proc = targets.delete()
    still = [n for n in targets.names if os.path.exists('/run/netns/%s' % n)]
    figures.update({'netns_del_failures': len(still), 'netns_mounts_after_del': len(netns_mounts(targets.prefix))})
    assert proc.returncode == 0 and not still, 'ip netns del failed: %s %s' % (proc.stderr[-1000:], still[:5])
    assert figures['netns_mounts_after_del'] == 0


def test_leaks_1000_ovs_netdev(targets, state_dir):
    host = 'npleakO%s' % suffix()
    bridge = 'ovsnpleak'
    run(['ip', 'netns', 'add', host])
    ovs = PrivateOvs(host)
    try:
        run(['ip', 'netns', 'exec', host, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0',
             'net.ipv6.conf.default.accept_dad=0'])
        run(['ip', 'netns', 'exec', host, 'ip', 'link', 'set', 'lo', 'up'])
        ovs.start()
        vsctl(ovs.db, 'add-br', bridge, '--', 'set', 'Bridge', bridge, 'datapath_type=netdev')
        ports_before = bridge_ports(ovs.db, bridge)
        rows_before = relsnap.ovs_rows(bridge, db=ovs.db)
        before = wait_settled(host, bridge, require_up=False)
        created, removed, figures = run_both_ways(
            targets, {'bridge': bridge, 'bridge_type': 'ovs', 'datapath_type': 'netdev', 'database_socket': ovs.db},
            state_dir, netns=host, extra={'vlan': 100})
        host_ifnames = [a['host_ifname'] for a in created['attachments']]
        assert len(set(host_ifnames)) == len(targets.names)
        after = in_netns_snapshot(host)
        links_now = [link['ifname'] for link in after['links']]
        ports_after = bridge_ports(ovs.db, bridge)
        stale_rows = interfaces_naming(ovs.db, targets.names)
        changes = relsnap.diff(before, after)
        figures.update({'ovs_ports_left': len(set(ports_after) - set(ports_before)),
                        'ovs_rows_naming_targets': len(stale_rows), 'host_netns_changes': len(changes),
                        'variant': 'Open vSwitch bridge (netdev) of a private OVS, module and vswitchd in a host namespace'})
        try:
            assert ports_after == ports_before, 'OVS ports left on %s: %s' % (bridge, sorted(set(ports_after) - set(ports_before))[:10])
            assert not stale_rows, 'OVS Interface rows still name test targets: %s' % stale_rows[:10]
            assert relsnap.ovs_rows(bridge, db=ovs.db) == rows_before
            assert not changes, 'the host namespace differs after create+remove: %s' % changes[:5]
            assert_nothing_left(targets, state_dir, host_ifnames, links_now, figures)
        finally:
            save_result('ovs', figures)
    finally:
        ovs.stop()
        run(['ip', 'netns', 'del', host], check=False)


def test_leaks_1000_linux_bridge_in_host_netns(targets, state_dir):
    host = 'npleakH%s' % suffix()
    bridge = 'brnpleak'
    run(['ip', 'netns', 'add', host])
    try:
        # A bridge whose carrier, MAC and IPv6 link-local address do not depend on its veth ports coming and
        # going (the kernel turns carrier off and the MAC to zero when the last port leaves): a fixed MAC and
        # one port of its own; no DAD, so no address is 'tentative' in one snapshot and not in the next.
        lines = ['link set lo up', 'link add %s address 02:00:00:6c:65:6b type bridge' % bridge,
                 'link add npkeep0 type veth peer name npkeep1', 'link set npkeep0 master %s' % bridge,
                 'link set npkeep0 up', 'link set npkeep1 up', 'link set %s up' % bridge]
        run(['ip', 'netns', 'exec', host, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0',
             'net.ipv6.conf.default.accept_dad=0'])
        proc = ip_batch(lines, netns=host)
        assert proc.returncode == 0, proc.stderr
        before = wait_settled(host, bridge)
        # Under the common soft limit of 1024 open files: 1000 targets hold ~5000 descriptors at once.
        created, removed, figures = run_both_ways(targets, {'bridge': bridge}, state_dir, netns=host, nofile=1024)
        host_ifnames = [a['host_ifname'] for a in created['attachments']]
        after = in_netns_snapshot(host)
        links_now = [link['ifname'] for link in after['links']]
        changes = relsnap.diff(before, after)
        figures.update({'host_netns_changes': len(changes),
                        'variant': 'Linux bridge in a host namespace, module under ulimit -n 1024'})
        try:
            assert not changes, 'the host namespace differs after create+remove: %s' % changes[:5]
            assert_nothing_left(targets, state_dir, host_ifnames, links_now, figures)
        finally:
            save_result('linux', figures)
    finally:
        run(['ip', 'netns', 'del', host], check=False)


def wait_settled(host, bridge, require_up=True, timeout=30):
    """The host namespace's snapshot once it stopped changing (a bridge gets carrier and its link-local
    address asynchronously), with the bridge up when require_up."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        snap = in_netns_snapshot(host)
        link = [x for x in snap['links'] if x['ifname'] == bridge][0]
        addrs = [x for x in snap['addresses'] if x['ifname'] == bridge][0]['addr_info']
        up = link.get('operstate') == 'UP' and any(a['family'] == 'inet6' for a in addrs)
        if snap == last and (up or not require_up):
            return snap
        assert time.monotonic() < deadline, 'namespace %s did not settle: %s %s' % (host, link, addrs)
        last = snap
        time.sleep(0.5)


def in_netns_snapshot(name):
    """relsnap.snapshot() of links, addresses, routes, rules, iptables, sysctls in another namespace."""
    code = ('import json, sys; sys.path.insert(0, %r); import relsnap; s = relsnap.snapshot(); '
            's.pop("ovs"); s.pop("records"); print(json.dumps(s))' % os.path.dirname(os.path.abspath(__file__)))
    out = run(['ip', 'netns', 'exec', name, 'python3', '-c', code]).stdout
    return json.loads(out)
