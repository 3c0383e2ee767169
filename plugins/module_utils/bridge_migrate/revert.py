# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The commit-confirmed revert of host_bridge_migrate, as a standalone program and as a library.

host_bridge_migrate saves the uplink's original state in a snapshot record (a root-only JSON file under
``/run/netplumb-pipework/bridge_migrate/``), copies THIS file's source next to it as ``revert.py`` and starts
it detached: ``python3 revert.py arm RECORD TOKEN DELAY``. After DELAY seconds, unless the record has been
confirmed (or re-armed with another token) meanwhile, it puts the uplink back: addresses, routes, MTU, MAC,
released from the bridge.

Why a copy of the source and a separate interpreter: Ansible deletes the module's temporary files when the
module exits, and the SSH session must be free to close, so the revert depends on nothing but the Python
standard library, ``ip`` (iproute2) and, for Open vSwitch, ``ovs-vsctl``; it detaches fully (new session,
second fork, standard streams on /dev/null, every other descriptor closed, working directory ``/``) and
inherits the module's network namespace (it is the host's namespace the module ran in). No systemd, no at.

The revert and host_bridge_migrate's other writers serialise on the collection's host lock (an flock on
``/run/netplumb-pipework.lock``, the file ``host_lock.py`` uses): a confirm and the revert never race.

Writes are ``ip`` argument lists (never a shell string); the module uses the same builders for the forward
change, so both directions share one tested code path. Every revert step is attempted even if an earlier one
failed; the result is then verified from ``ip -json`` output (addresses back on the uplink, uplink released).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

STATE_DIR = '/run/netplumb-pipework/bridge_migrate'
LOCK_PATH = '/run/netplumb-pipework.lock'
SCRIPT_NAME = 'revert.py'
RECORD_VERSION = 1

# Record states.
ARMED = 'armed'              # a revert process is waiting; the change is not confirmed yet
CONFIRMED = 'confirmed'      # confirmed: the revert was cancelled
UNARMED = 'unarmed'          # migrated with rollback_timeout=0: no revert was armed
REVERTED = 'reverted'        # the revert fired (timeout, failed probe, failed change) and succeeded
REVERT_FAILED = 'revert_failed'  # the revert fired and could not restore everything
RESTORED = 'restored'        # state=absent put the uplink back

# Address flags (linux/if_addr.h) that an `ip addr add` can carry over.
IFA_F_NODAD = 0x02
IFA_F_HOMEADDRESS = 0x10
IFA_F_MANAGETEMPADDR = 0x100
IFA_F_NOPREFIXROUTE = 0x200
IFA_F_MCAUTOJOIN = 0x400
_ADD_FLAGS = ((IFA_F_HOMEADDRESS, 'home'), (IFA_F_MANAGETEMPADDR, 'mngtmpaddr'),
              (IFA_F_NOPREFIXROUTE, 'noprefixroute'), (IFA_F_MCAUTOJOIN, 'autojoin'))

SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


# ---- records -----------------------------------------------------------------------------------------

def record_path(netns_inode, uplink, state_dir=STATE_DIR):
    """One record per (network namespace, uplink): test namespaces and lab hosts on one machine differ."""
    return os.path.join(state_dir, 'netns-%d.%s.json' % (netns_inode, uplink))


def ensure_state_dir(state_dir=STATE_DIR):
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)


def load_record(path):
    """The record at ``path``, or None when there is none; a damaged file reads as None too."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get('version') != RECORD_VERSION:
        return None
    return record


def write_record(path, record):
    """Write atomically (temporary file, fsync, rename), mode 0600."""
    tmp = '%s.tmp.%d' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(record, indent=1, sort_keys=True).encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def add_event(record, event, **details):
    """Keep a short history in the record: what happened when, for the operator."""
    entry = {'time': time.time(), 'event': event}
    entry.update(details)
    history = record.setdefault('history', [])
    history.append(entry)
    del history[:-20]


def log_line(path, text):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, ('%s [%d] %s\n' % (time.strftime('%Y-%m-%dT%H:%M:%S'), os.getpid(), text)).encode('utf-8'))
        finally:
            os.close(fd)
    except OSError:
        pass


# ---- processes -----------------------------------------------------------------------------------------

def process_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return [part.decode('utf-8', 'replace') for part in handle.read().split(b'\0') if part]
    except (IOError, OSError):
        return None


def is_revert_process(pid, token):
    """True when ``pid`` is alive and is the revert armed with ``token`` (never signal a recycled PID)."""
    if not pid or not token:
        return False
    argv = process_cmdline(int(pid))
    if not argv:
        return False
    return token in argv and 'arm' in argv and any(a.endswith(SCRIPT_NAME) for a in argv)


def cancel_revert(pid, token, wait=5.0):
    """Stop the revert process armed with ``token``. Returns True when one was running and is gone now."""
    if not is_revert_process(pid, token):
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
    except OSError:
        return not is_revert_process(pid, token)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not is_revert_process(pid, token):
            return True
        time.sleep(0.02)
    try:
        os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
    time.sleep(0.05)
    return not is_revert_process(pid, token)


# ---- ip argument lists -------------------------------------------------------------------------------

def _fam(family):
    return '-6' if family == 6 else '-4'


def renamed_label(label, old_dev, new_dev):
    """An IPv4 label follows its device: ``eth0:1`` on eth0 becomes ``br0:1`` on br0 (if it fits)."""
    if not label or label == old_dev:
        return None
    if label.startswith(old_dev + ':'):
        new = new_dev + label[len(old_dev):]
        return new if len(new.encode('utf-8')) <= 15 else None
    return None


def addr_argv(ip, verb, addr, dev, label=None, nodad=False):
    """``ip addr add|del`` for an address entry (as host_bridge_migrate's snapshot stores it)."""
    argv = [ip, _fam(addr['family']), 'addr', verb]
    if addr.get('peer'):
        argv += [addr['address'], 'peer', '%s/%d' % (addr['peer'], addr['prefixlen'])]
    else:
        argv.append('%s/%d' % (addr['address'], addr['prefixlen']))
    if verb == 'add':
        if addr['family'] == 4 and addr.get('broadcast'):
            argv += ['broadcast', addr['broadcast']]
        if addr['family'] == 4 and label:
            argv += ['label', label]
        if addr.get('scope'):
            argv += ['scope', str(addr['scope'])]
        flags = addr.get('flags') or 0
        for bit, word in _ADD_FLAGS:
            if flags & bit:
                argv.append(word)
        if addr['family'] == 6 and (nodad or flags & IFA_F_NODAD):
            argv.append('nodad')
    argv += ['dev', dev]
    return argv


def route_devices(route):
    if route.get('nexthops'):
        return [nh.get('dev') for nh in route['nexthops']]
    return [route.get('dev')]


def route_argv(ip, verb, route, rename=None):
    """``ip route replace|del`` for a route entry; ``rename`` maps device names (uplink -> bridge)."""
    rename = rename or {}
    argv = [ip, _fam(route['family']), 'route', verb, route['dst']]
    if route.get('src'):
        argv += ['from', route['src']]
    if route.get('tos'):
        argv += ['tos', str(route['tos'])]
    if route.get('nexthops'):
        for nh in route['nexthops']:
            argv.append('nexthop')
            if nh.get('gateway'):
                argv += ['via', nh['gateway']]
            argv += ['dev', rename.get(nh['dev'], nh['dev'])]
            if nh.get('weight', 1) != 1:
                argv += ['weight', str(nh['weight'])]
            if nh.get('onlink'):
                argv.append('onlink')
    else:
        if route.get('gateway'):
            argv += ['via', route['gateway']]
        argv += ['dev', rename.get(route['dev'], route['dev'])]
        if route.get('onlink'):
            argv.append('onlink')
    argv += ['table', str(route.get('table', 254)), 'metric', str(route.get('metric', 0))]
    if verb != 'del':
        argv += ['proto', str(route.get('proto', 3))]
        if route['family'] == 4 and route.get('scope') is not None:
            argv += ['scope', str(route['scope'])]
        if route.get('prefsrc'):
            argv += ['src', route['prefsrc']]
        if route['family'] == 6 and route.get('pref'):
            argv += ['pref', route['pref']]
        for key, value in sorted((route.get('metrics') or {}).items()):
            argv += [key, str(value)]
    return argv


def route_order(routes):
    """On-link routes first: a gateway must be reachable before a route through it is added."""
    return sorted(routes, key=lambda r: (bool(r.get('gateway') or r.get('nexthops')),))


def address_order(addresses, removing=False):
    """Primaries before secondaries when adding; the reverse when removing (a primary takes its
    secondaries with it)."""
    return list(reversed(addresses)) if removing else list(addresses)


# ---- the revert ---------------------------------------------------------------------------------------

def _run_subprocess(argv):
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                close_fds=True, env={'PATH': SAFE_PATH, 'LC_ALL': 'C'})
        out, err = proc.communicate(timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, '', str(exc)
    return proc.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')


def _ovs_base(record):
    tools = record.get('tools') or {}
    return [tools.get('ovs_vsctl') or 'ovs-vsctl', '--db=%s' % record['database_socket'], '--timeout=20']


def restore(record, run=None, log=None):
    """Put the uplink back as ``record['original']`` says, from whatever state the host is in.

    Every step is attempted even if an earlier one failed (a half-done revert is worse than a complete one
    with one error), then the outcome is verified. Returns ``(ok, problems)``.
    """
    run = run or _run_subprocess
    log = log or (lambda text: None)
    ip = (record.get('tools') or {}).get('ip') or 'ip'
    uplink, bridge = record['uplink'], record['bridge']
    orig = record['original']
    problems = []

    def step(argv, must=False):
        rc, out, err = run(argv)
        log('%s -> rc=%d %s' % (' '.join(argv), rc, (err or '').strip()))
        if rc != 0 and must:
            problems.append('%s: %s' % (' '.join(argv), (err or out or '').strip()))
        return rc

    # 1. the addresses back on the uplink first, so the host answers on them as soon as it is released
    for addr in address_order(orig['addresses']):
        step(addr_argv(ip, 'add', addr, uplink, label=addr.get('label') if addr.get('label') != uplink else None,
                       nodad=True))
    # 2. release the uplink from the bridge
    if record['bridge_type'] == 'ovs':
        step(_ovs_base(record) + ['--', '--if-exists', 'del-port', bridge, uplink], must=True)
    else:
        step([ip, 'link', 'set', 'dev', uplink, 'nomaster'], must=True)
    # 3. its MTU, MAC and up/down state as they were (enslaving changes none of them, an operator might
    #    have). Only what differs: setting even the same MAC restarts IPv6 DAD on the link-local address.
    argv = _link_changes(run, ip, uplink, orig)
    if argv:
        step([ip, 'link', 'set', 'dev', uplink] + argv, must=True)
    # 4. routes back through the uplink (replace: atomically, same table/destination/metric)
    for route in route_order(orig['routes']):
        step(route_argv(ip, 'replace', route), must=True)
    # 5. remove the bridge's copies: routes, then addresses
    for route in orig['routes']:
        # `dev BRIDGE` in the argument list: this can only ever match the bridge's copy
        step(route_argv(ip, 'del', route, rename={uplink: bridge}))
    for addr in address_order(orig['addresses'], removing=True):
        step(addr_argv(ip, 'del', addr, bridge))
    # 6. a bridge that the migration created and that nothing else uses goes too
    if record.get('bridge_created') and not _bridge_in_use(record, run, ip):
        if record['bridge_type'] == 'ovs':
            step(_ovs_base(record) + ['--', '--if-exists', 'del-br', bridge])
        else:
            step([ip, 'link', 'del', 'dev', bridge])
    problems.extend(verify_restored(record, run))
    return not problems, problems


def _link_changes(run, ip, dev, orig):
    """The `ip link set` words that bring ``dev`` back to the original MTU, MAC and up/down state."""
    want_up = orig.get('up', True)
    rc, out, err = run([ip, '-json', 'link', 'show', 'dev', dev])
    try:
        link = json.loads(out or '[]')[0] if rc == 0 else None
    except (ValueError, IndexError):
        link = None
    if link is None:  # cannot tell: set everything
        words = ['mtu', str(orig['mtu'])] + (['address', orig['mac']] if orig.get('mac') else [])
        return words + ['up' if want_up else 'down']
    words = []
    if orig.get('mtu') and link.get('mtu') != orig['mtu']:
        words += ['mtu', str(orig['mtu'])]
    if orig.get('mac') and (link.get('address') or '').lower() != orig['mac'].lower():
        words += ['address', orig['mac']]
    if ('UP' in (link.get('flags') or [])) != bool(want_up):
        words.append('up' if want_up else 'down')
    return words


def _bridge_in_use(record, run, ip):
    """Does the bridge have ports other than the uplink, or addresses of its own?"""
    bridge, uplink = record['bridge'], record['uplink']
    if record['bridge_type'] == 'ovs':
        rc, out, err = run(_ovs_base(record) + ['list-ports', bridge])
        if rc != 0:
            return True
        ports = [p for p in out.split() if p and p != uplink]
    else:
        rc, out, err = run([ip, '-json', 'link', 'show', 'master', bridge])
        if rc != 0:
            return True
        try:
            ports = [link.get('ifname') for link in json.loads(out or '[]') if link.get('ifname') != uplink]
        except ValueError:
            return True
    if ports:
        return True
    rc, out, err = run([ip, '-json', 'addr', 'show', 'dev', bridge, 'scope', 'global'])
    try:
        return bool(rc == 0 and any(link.get('addr_info') for link in json.loads(out or '[]')))
    except ValueError:
        return True


def verify_restored(record, run=None):
    """Problems left after a restore: original addresses missing on the uplink, uplink still a port."""
    run = run or _run_subprocess
    ip = (record.get('tools') or {}).get('ip') or 'ip'
    uplink, bridge = record['uplink'], record['bridge']
    problems = []
    rc, out, err = run([ip, '-json', 'addr', 'show', 'dev', uplink])
    if rc != 0:
        return ['cannot read %s: %s' % (uplink, (err or '').strip())]
    try:
        links = json.loads(out or '[]')
    except ValueError:
        return ['ip -json addr show returned something that is not JSON']
    have = set()
    master = None
    for link in links:
        master = link.get('master')
        for info in link.get('addr_info') or []:
            have.add('%s/%s' % (info.get('local'), info.get('prefixlen')))
    for addr in record['original']['addresses']:
        cidr = '%s/%d' % (addr['address'], addr['prefixlen'])
        if cidr not in have:
            problems.append('address %s is not on %s' % (cidr, uplink))
    if record['bridge_type'] == 'ovs':
        rc, out, err = run(_ovs_base(record) + ['port-to-br', uplink])
        if rc == 0 and out.strip():
            problems.append('%s is still a port of Open vSwitch bridge %s' % (uplink, out.strip()))
    elif master:
        problems.append('%s is still a port of %s' % (uplink, master))
    return problems


# ---- the lock and the detached process ----------------------------------------------------------------

def lock(path):
    """Block until the host lock is ours; the descriptor must stay open while it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def fire(record_file, token, reason, log):
    """Revert now if the record is still armed with ``token``. Runs with the host lock held."""
    record = load_record(record_file)
    if record is None:
        log('no record at %s: nothing to revert' % record_file)
        return 0
    if record.get('token') != token or record.get('status') != ARMED:
        log('record is %s with token %s: not ours to revert' % (record.get('status'), record.get('token')))
        return 0
    log('reverting: %s' % reason)
    ok, problems = restore(record, log=log)
    record['status'] = REVERTED if ok else REVERT_FAILED
    record['reason'] = reason
    record['reverted_at'] = time.time()
    record['problems'] = problems
    record['pid'] = None
    add_event(record, record['status'], token=token, reason=reason, problems=problems)
    write_record(record_file, record)
    log('%s%s' % (record['status'], (': ' + '; '.join(problems)) if problems else ''))
    return 0 if ok else 1


def _detach():
    """Second fork: the parent (already a session leader with no terminal) reports the child's PID and
    exits; the child owns no terminal, no inherited descriptor, and no working directory."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        os.close(write_end)
        return pid
    os.close(read_end)
    os.close(write_end)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    os.closerange(3, 65536)
    os.chdir('/')
    os.umask(0o077)
    return 0


def arm(record_file, token, delay):
    """Entry point of ``revert.py arm``: detach, wait ``delay`` seconds, then revert unless confirmed."""
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (the module starts us with start_new_session)
    sys.stdout.flush()
    child = _detach()
    if child:
        # The module reads this PID, then verifies /proc/PID/cmdline carries the token.
        os.write(1, ('%d\n' % child).encode('ascii'))
        os._exit(0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logfile = record_file[:-len('.json')] + '.log' if record_file.endswith('.json') else record_file + '.log'

    def log(text):
        log_line(logfile, text)

    log('armed: token %s, revert in %.1f s unless confirmed' % (token, delay))
    deadline = time.monotonic() + delay
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(left, 1.0))
    record = load_record(record_file)
    lock_path = (record or {}).get('lock_path') or LOCK_PATH
    fd = lock(lock_path)
    # From here on a confirm cannot interrupt half a revert: it waits for the lock.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    try:
        return fire(record_file, token, 'not confirmed within %g s (rollback_timeout)' % delay, log)
    finally:
        os.close(fd)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 4 and argv[0] == 'arm':
        return arm(argv[1], argv[2], float(argv[3]))
    if len(argv) == 3 and argv[0] == 'now':
        # Manual use: revert at once (still only if the record is armed with this token).
        fd = lock((load_record(argv[1]) or {}).get('lock_path') or LOCK_PATH)
        try:
            return fire(argv[1], argv[2], 'reverted by hand', lambda text: sys.stderr.write(text + '\n'))
        finally:
            os.close(fd)
    sys.stderr.write('usage: %s arm RECORD TOKEN DELAY | now RECORD TOKEN\n' % os.path.basename(sys.argv[0]))
    return 2


if __name__ == '__main__':
    raise SystemExit(main())
