"""What "the host is unchanged" means for the reliability tests, read in the calling thread's network namespace.

``snapshot()`` returns a JSON-able dict of everything a netplumb.pipework module may change on a host:

- ``links``: ``ip -j link`` (ifindex kept: a link deleted and recreated under the same name differs);
- ``addresses``: ``ip -j addr`` without the lifetimes (they count down);
- ``routes``: ``ip -j route show table all`` for IPv4 and IPv6 (without ``expires``);
- ``rules``: ``ip -j rule`` for IPv4 and IPv6;
- ``iptables`` / ``ip6tables``: ``iptables-save`` minus counters and comment lines;
- ``sysctl``: forwarding and route_localnet switches nat_portmap turns on;
- ``ovs``: the rows of one OVS bridge (Bridge, its Ports, their Interfaces; names instead of UUIDs) plus any
  Bridge/Port/Interface row whose name is in ``watch`` (names a test might make a module create), from the
  root OVS, so rows of bridges that concurrent tests own are left out;
- ``records``: docker_veth's attachment records under ``state_dir`` (path, mode, sha256 of the content);
- ``bridge_migrate``: host_bridge_migrate's snapshot/revert files of this network namespace under
  /run/netplumb-pipework/bridge_migrate (a failed run must not leave an armed revert behind).

``diff(before, after)`` names what differs, for assertion messages.
Pure stdlib; used by the tests and by the callback plugin that snapshots after each bad-input case.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time

BRIDGE_MIGRATE_DIR = '/run/netplumb-pipework/bridge_migrate'
_COUNTERS = re.compile(r'\[\d+:\d+\]')
SYSCTLS = ('net/ipv4/ip_forward', 'net/ipv6/conf/all/forwarding', 'net/ipv4/conf/all/route_localnet',
           'net/ipv4/conf/default/route_localnet')


def _out(argv):
    # stdin=DEVNULL: in ansible-playbook's process (the callback) fd 0 is closed, and ovs-vsctl given no fd 0
    # gets its own socket as fd 0 and aborts (poll-loop.c: assertion !fd != !wevent failed).
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    return proc.stdout if proc.returncode == 0 else ''


def _json(argv):
    text = _out(argv).strip()
    try:
        return json.loads(text) if text else []
    except ValueError:
        return ['unparsable: %s' % text[:200]]


def _links():
    out = []
    for link in _json(['ip', '-j', 'link', 'show']):
        link = dict(link)
        out.append(link)
    return sorted(out, key=lambda x: x.get('ifname', ''))


def _addresses():
    out = []
    for link in _json(['ip', '-j', 'addr', 'show']):
        infos = []
        for info in link.get('addr_info', []):
            info = dict((k, v) for k, v in info.items() if k not in ('valid_life_time', 'preferred_life_time'))
            infos.append(info)
        out.append({'ifname': link.get('ifname'), 'addr_info': sorted(infos, key=json.dumps)})
    return sorted(out, key=lambda x: x['ifname'] or '')


def _routes(family):
    rows = _json(['ip', family, '-j', 'route', 'show', 'table', 'all'])
    return sorted((dict((k, v) for k, v in r.items() if k != 'expires') for r in rows), key=json.dumps)


def _rules(family):
    return sorted(_json(['ip', family, '-j', 'rule', 'show']), key=json.dumps)


def iptables_save(tool='iptables-save'):
    """``iptables-save`` minus counters and comments (the tables as a list of lines)."""
    lines = []
    for line in _out([tool]).splitlines():
        if line.startswith('#') or not line.strip():
            continue
        lines.append(_COUNTERS.sub('[0:0]', line))
    return lines


def _sysctls():
    out = {}
    for name in SYSCTLS:
        try:
            with open('/proc/sys/' + name) as f:
                out[name] = f.read().strip()
        except OSError:
            out[name] = None
    return out


def _decode(value, names):
    """An OVSDB JSON datum with UUIDs replaced by row names."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, payload = value
        if kind == 'set':
            return sorted((_decode(v, names) for v in payload), key=json.dumps)
        if kind == 'map':
            return dict((str(_decode(k, names)), _decode(v, names)) for k, v in payload)
        if kind == 'uuid':
            return names.get(payload, payload)
    return value


OVS_COLUMNS = {
    'Bridge': '_uuid,name,ports,datapath_type,external_ids,other_config,fail_mode,protocols',
    'Port': '_uuid,name,interfaces,tag,trunks,vlan_mode,external_ids,other_config',
    'Interface': '_uuid,name,type,options,external_ids,ofport,error',
}


def ovs_rows(bridge=None, watch=(), db=None):
    """Rows of ``bridge`` and rows named in ``watch``: {table: {name: {column: value}}}."""
    argv = ['ovs-vsctl', '--timeout=30'] + (['--db=%s' % db] if db else []) + ['--format=json']
    for table in ('Bridge', 'Port', 'Interface'):
        argv += ['--', '--columns=%s' % OVS_COLUMNS[table], 'list', table]
    for attempt in range(5):  # other tests restart ovsdb-server (fault tests): wait for it to come back
        text = _out(argv)
        docs = [line for line in text.splitlines() if line.strip()]
        if len(docs) == 3:
            break
        time.sleep(1 + attempt)
    else:
        # Never equal to another snapshot: a database that cannot be read proves nothing.
        return {'error': 'ovs-vsctl gave no tables at %f' % time.time(), 'Bridge': {}, 'Port': {}, 'Interface': {}}
    tables = {}
    names = {}
    for table, doc in zip(('Bridge', 'Port', 'Interface'), docs):
        parsed = json.loads(doc)
        rows = [dict(zip(parsed['headings'], row)) for row in parsed['data']]
        tables[table] = rows
        for row in rows:
            names[row['_uuid'][1]] = row['name']
    keep = {'Bridge': set(), 'Port': set(), 'Interface': set()}
    watch = set(watch or ())
    by_name = dict((t, dict((r['name'], r) for r in rows)) for t, rows in tables.items())
    for table in keep:
        keep[table].update(n for n in by_name[table] if n in watch)
    if bridge in by_name['Bridge']:
        keep['Bridge'].add(bridge)
    for bname in list(keep['Bridge']):
        for port in _decode(by_name['Bridge'][bname]['ports'], names):
            keep['Port'].add(port)
    for pname in list(keep['Port']):
        if pname in by_name['Port']:
            for iface in _decode(by_name['Port'][pname]['interfaces'], names):
                keep['Interface'].add(iface)
    out = {}
    for table, wanted in keep.items():
        out[table] = {}
        for name in sorted(wanted):
            row = by_name[table].get(name)
            if row is not None:
                out[table][name] = dict((k, _decode(v, names)) for k, v in row.items() if k != '_uuid')
    return out


def records(state_dir):
    """docker_veth's attachment records: {relative path: [mode, sha256]}."""
    out = {}
    if not state_dir or not os.path.isdir(state_dir):
        return out
    for root, dirs, files in os.walk(state_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                with open(path, 'rb') as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                mode = oct(os.stat(path).st_mode & 0o7777)
            except OSError as exc:
                digest, mode = 'unreadable: %s' % exc, None
            out[os.path.relpath(path, state_dir)] = [mode, digest]
    return out


def netns_inode():
    return os.stat('/proc/thread-self/ns/net').st_ino


def bridge_migrate_files(inode=None):
    inode = netns_inode() if inode is None else inode
    prefix = 'netns-%d.' % inode
    try:
        names = os.listdir(BRIDGE_MIGRATE_DIR)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def snapshot(ovs_bridge=None, watch=(), state_dir=None):
    return {
        'links': _links(),
        'addresses': _addresses(),
        'routes': {'4': _routes('-4'), '6': _routes('-6')},
        'rules': {'4': _rules('-4'), '6': _rules('-6')},
        'iptables': iptables_save('iptables-save'),
        'ip6tables': iptables_save('ip6tables-save'),
        'sysctl': _sysctls(),
        'ovs': ovs_rows(ovs_bridge, watch),
        'records': records(state_dir),
        'bridge_migrate': bridge_migrate_files(),
    }


def diff(before, after):
    """Human-readable differences between two snapshots (empty list: the same)."""
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        if isinstance(b, list) and isinstance(a, list):
            bs = [json.dumps(x, sort_keys=True) for x in b]
            as_ = [json.dumps(x, sort_keys=True) for x in a]
            gone = [x for x in bs if x not in as_]
            new = [x for x in as_ if x not in bs]
            out.append('%s: removed %s; added %s' % (key, gone[:5], new[:5]))
        elif isinstance(b, dict) and isinstance(a, dict):
            for sub in sorted(set(b) | set(a)):
                if b.get(sub) != a.get(sub):
                    out.append('%s.%s: %s -> %s' % (key, sub, json.dumps(b.get(sub), sort_keys=True)[:600],
                                                    json.dumps(a.get(sub), sort_keys=True)[:600]))
        else:
            out.append('%s: %r -> %r' % (key, b, a))
    return out


@contextlib.contextmanager
def sigterm_raises():
    """While the body runs, SIGTERM (a CI time budget, ``timeout``) raises KeyboardInterrupt, so the callers'
    ``finally`` blocks remove their namespaces, containers and bridges, and subprocess.run kills its child."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt('SIGTERM')
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
