"""Helpers of the persistence tests: the agent as a process, a private dockerd, recovery timing, the report.

Every test uses its own record store (NETPLUMB_STATE_DIR in a temporary directory), so its agent never sees the
records of other tests or of other people's runs, and acts on nothing else.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import signal
import subprocess
import time

from nphelpers import REPO, TARGET_PYTHON, run

AGENT_MODULE = 'ansible_collections.netplumb.pipework.plugins.module_utils.veth.agent'
REPORT = os.path.join(REPO, 'bench', 'results', 'reliability.json')
WAIT = 30.0  # generous bound for every recovery; the measured figure is reported, never asserted


def agent_env(state_dir, extra=None):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.path.join(REPO, '.build', 'collections')
    env['NETPLUMB_STATE_DIR'] = state_dir
    env.update(extra or {})
    return env


class AgentProcess:
    """The agent run in the foreground as a child process (the way systemd runs it)."""

    def __init__(self, state_dir, args=(), prefix=(), host_id=None, python=TARGET_PYTHON):
        self.state_dir = state_dir
        self.args = list(args)
        self.prefix = list(prefix)
        self.python = python
        self.host_id = host_id or run(self.prefix + ['hostname']).stdout.strip()
        self.log_path = os.path.join(state_dir, 'agent-%s.log' % self.host_id)
        self.status_path = os.path.join(state_dir, 'agents', '%s.json' % self.host_id)
        self.proc = None

    def start(self, wait=True):
        argv = self.prefix + [self.python, '-m', AGENT_MODULE, '--state-dir', self.state_dir, '--log-level', 'debug',
                              '--log-file', self.log_path] + self.args
        # pylint: disable-next=consider-using-with  # a daemon that outlives this call; stop() ends it
        self.proc = subprocess.Popen(argv, env=agent_env(self.state_dir), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()
        if wait:
            self.wait_ready()
        return self

    def status(self):
        try:
            with open(self.status_path) as f:
                return json.load(f)
        except (IOError, ValueError):
            return {}

    def wait_ready(self, timeout=WAIT):
        """Connected to Docker and through its first reconcile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st.get('pid') == self.pid and st.get('connected') and st.get('reconciles', 0) >= 1:
                return st
            assert self.proc.poll() is None, 'agent exited (%s):\n%s' % (self.proc.returncode, self.log())
            time.sleep(0.05)
        raise AssertionError('agent not ready in %.0f s:\n%s' % (timeout, self.log()))

    @property
    def pid(self):
        """The agent's own PID (the child of nsenter when started inside a lab host)."""
        if not self.prefix:
            return self.proc.pid
        st = self.status()
        return st.get('pid') if st.get('pid') and _is_descendant(st['pid'], self.proc.pid) else None

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except IOError:
            return ''

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = self.pid or self.proc.pid
        os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def _is_descendant(pid, ancestor):
    while pid and pid > 1:
        if pid == ancestor:
            return True
        try:
            with open('/proc/%d/stat' % pid) as f:
                stat = f.read()
            pid = int(stat[stat.rindex(')') + 2:].split()[1])
        except (IOError, ValueError):
            return False
    return False


def wait_for(predicate, timeout=WAIT, interval=0.02):
    """Poll until predicate() is true; returns the seconds it took (None if it never became true)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def started_at(name, docker=('docker',)):
    """The container's State.StartedAt as a time.time() value."""
    text = run(list(docker) + ['inspect', '-f', '{{.State.StartedAt}}', name]).stdout.strip()
    day, rest = text.split('T', 1)
    whole, frac = (rest.rstrip('Z').split('.', 1) + [''])[:2]
    stamp = datetime.datetime.strptime('%s %s' % (day, whole), '%Y-%m-%d %H:%M:%S').replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return stamp + (float('0.' + frac) if frac else 0.0)


def container_pid(name, docker=('docker',)):
    return int(run(list(docker) + ['inspect', '-f', '{{.State.Pid}}', name]).stdout.strip())


def ns_ping(pid, ip, prefix=()):
    """One ping from the network namespace of pid, with the host's ping (no docker exec per try)."""
    return subprocess.run(list(prefix) + ['nsenter', '-t', str(pid), '-n', 'ping', '-c', '1', '-W', '1', '-q', ip],
                          capture_output=True, check=False).returncode == 0


def ns_link(pid, ifname, prefix=()):
    """The interface as `ip -j addr` shows it inside pid's namespace, or None."""
    proc = subprocess.run(list(prefix) + ['nsenter', '-t', str(pid), '-n', 'ip', '-j', 'addr', 'show', 'dev', ifname],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    data = json.loads(proc.stdout)
    return data[0] if data else None


def ns_summary(pid, ifname, prefix=()):
    """What a re-apply must bring back: addresses, MAC, MTU, and the routes through the interface."""
    link = ns_link(pid, ifname, prefix)
    if link is None:
        return None
    routes = json.loads(subprocess.run(list(prefix) + ['nsenter', '-t', str(pid), '-n', 'ip', '-j', 'route', 'show'],
                                       capture_output=True, text=True, check=True).stdout)
    return {
        'addresses': sorted('%s/%s' % (a['local'], a['prefixlen']) for a in link.get('addr_info', [])
                            if a.get('scope') == 'global'),
        'mac': link.get('address'),
        'mtu': link.get('mtu'),
        'routes': sorted('%s via %s' % (r['dst'], r.get('gateway')) for r in routes if r.get('dev') == ifname
                         and r.get('protocol') != 'kernel'),
    }


def record_figure(test, **figures):
    """Print the measured figures and merge them into bench/results/reliability.json (key: persistence)."""
    figures = dict((k, round(v, 3) if isinstance(v, float) else v) for k, v in figures.items())
    entry = dict(figures, measured_at=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
                 load_average_1m=round(os.getloadavg()[0], 2))
    print('\nRELIABILITY %s: %s' % (test, json.dumps(figures, sort_keys=True)))
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(REPORT) as f:
                doc = json.load(f)
        except (IOError, ValueError):
            doc = {}
        doc.setdefault('persistence', {})[test] = entry
        tmp = REPORT + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write('\n')
        os.replace(tmp, REPORT)


class PrivateDockerd:
    """A second dockerd of our own (own data-root, exec-root, pidfile, socket, containerd namespace), so that
    stopping it never touches anybody else's containers. It starts its own managed containerd."""

    def __init__(self, tag):
        self.tag = 'npd' + tag
        self.base = '/tmp/%s' % self.tag
        self.exec_root = '/run/%s' % self.tag
        self.socket = '/run/%s.sock' % self.tag
        self.url = 'unix://' + self.socket
        self.pidfile = '/run/%s.pid' % self.tag
        self.log_path = os.path.join(self.base, 'dockerd.log')
        self.proc = None
        self.docker = ('docker', '-H', self.url)

    def argv(self):
        return ['dockerd', '--config-file', os.path.join(self.base, 'daemon.json'),
                '--data-root', os.path.join(self.base, 'data'), '--exec-root', self.exec_root,
                '--pidfile', self.pidfile, '-H', self.url, '--bridge=none', '--iptables=false',
                '--ip6tables=false', '--ip-masq=false', '--live-restore=false', '--shutdown-timeout=2',
                '--containerd-namespace', self.tag, '--containerd-plugins-namespace', self.tag + '-plugins']

    def start(self, timeout=60):
        os.makedirs(self.base, exist_ok=True)
        with open(os.path.join(self.base, 'daemon.json'), 'w') as f:
            f.write('{}\n')
        log = open(self.log_path, 'ab')  # pylint: disable=consider-using-with  # handed to the daemon
        # pylint: disable-next=consider-using-with  # a daemon; stop() ends it by its PID
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        took = wait_for(self.up, timeout=timeout, interval=0.1)
        if took is None:
            raise AssertionError('private dockerd did not come up:\n%s' % self.log())
        return took

    def up(self):
        return subprocess.run(list(self.docker) + ['version', '--format', '{{.Server.Version}}'],
                              capture_output=True, check=False).returncode == 0

    def load_image(self, image):
        save = subprocess.Popen(['docker', 'save', image], stdout=subprocess.PIPE)  # pylint: disable=consider-using-with
        subprocess.run(list(self.docker) + ['load'], stdin=save.stdout, check=True, capture_output=True)
        save.stdout.close()
        assert save.wait() == 0

    def stop(self, timeout=60):
        """SIGTERM (containers are stopped: --live-restore=false), wait for the daemon to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-3000:]
        except IOError:
            return ''

    def destroy(self):
        if self.proc is not None and self.proc.poll() is None:
            names = run(list(self.docker) + ['ps', '-aq'], check=False).stdout.split()
            if names:
                run(list(self.docker) + ['rm', '-f'] + names, check=False)
        self.stop()
        run(['rm', '-rf', self.base, self.exec_root], check=False)
        for path in (self.socket, self.pidfile):
            if os.path.exists(path):
                os.unlink(path)
