"""The shared base of the benchmark: one run's results, its lab, its containers and the tools every method uses.

bench/run.py (the entry point) makes one Session; the methods (bench/methods.py) and the sections
(bench/sections.py) measure through it. A Session owns:
  - the results dict that becomes results.json (its keys are what bench/report.py reads), saved after
    every step, so an aborted run still leaves what it measured;
  - the run directory (bench/results/<stamp>/, or --out, or a temporary directory for --smoke) with run.log
    (what it did) and commands.log (every command, its exit code and output);
  - the namespace lab (lab/lab.py) and its private per-host /run and /var/lib paths, the test containers,
    ansible-playbook with the bench_results callback, host commands (bench/hostops.py) and the time budget.
Importing it costs nothing; the lab and containers are made only when run.py asks for them.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / 'bench'
LAB_NAME = 'npbench'
CONTAINER_PREFIX = 'npbench-c'
BRIDGE = 'ovsbench'
MH_BRIDGE = 'ovsmh'
NETNS_PREFIX = 'npbm'
SSH_ARGS = '-o ControlMaster=auto -o ControlPersist=900s'
HOST_LOCK = '/run/netplumb-pipework.lock'


class Log:
    def __init__(self, path):
        self.f = open(path, 'a')
        self.t0 = time.monotonic()

    def __call__(self, msg):
        line = '[%7.1fs] %s' % (time.monotonic() - self.t0, msg)
        print(line, flush=True)
        self.f.write(line + '\n')
        self.f.flush()


def run(argv, check=True, env=None, cwd=None, log_path=None, timeout=3600):
    """Run argv; returns (wall seconds, CompletedProcess). Output goes to log_path when given."""
    t = time.monotonic()
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                          check=False)
    wall = time.monotonic() - t
    if log_path:
        with open(log_path, 'a') as f:
            f.write('$ %s\n(rc=%d, %.3fs)\n%s\n%s\n' % (
                ' '.join(map(str, argv))[:500], proc.returncode, wall, proc.stdout[-20000:], proc.stderr[-20000:]))
    if check and proc.returncode != 0:
        raise RuntimeError('%s failed (rc=%d): %s %s' % (
            ' '.join(map(str, argv))[:300], proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:]))
    return wall, proc


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def write_json(path, data):
    with open(path, 'w') as f:
        json.dump(data, f, indent=1, sort_keys=True)


def address_of(i):
    return '10.77.%d.%d/16' % (i // 250, i % 250 + 1)


def vlan_of(i):
    return 101 + i % 4


def ensure_host_lock():
    """The collection's lock file must exist before a private one can be bind-mounted over it."""
    if not os.path.exists(HOST_LOCK):
        os.close(os.open(HOST_LOCK, os.O_CREAT | os.O_RDWR, 0o600))


class Session:
    """One benchmark run: options, results, run directory, lab, containers; the tools the methods share."""

    def __init__(self, args):
        self.args = args
        self.stamp = time.strftime('%Y%m%d-%H%M%S')
        # --smoke: other names, so that a smoke test never touches a full run's lab or containers.
        self.lab_name = 'npsmoke' if args.smoke else LAB_NAME
        self.prefix = 'npsmoke-c' if args.smoke else CONTAINER_PREFIX
        # Only a run into bench/results/ publishes bench/results/latest.json.
        self.publish = not (args.out or args.smoke)
        if args.out:
            self.out = Path(args.out).resolve()
        elif args.smoke:
            import tempfile  # pylint: disable=import-outside-toplevel
            self.out = Path(tempfile.mkdtemp(prefix='npbench-smoke-'))
        else:
            self.out = BENCH / 'results' / self.stamp
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.out / 'run.log')
        self.cmdlog = self.out / 'commands.log'
        self.python = os.path.join(os.environ['NP_VENV'], 'bin', 'python')
        self.ansible_playbook = os.path.join(os.environ['NP_VENV'], 'bin', 'ansible-playbook')
        sys.path.insert(0, str(REPO / 'lab'))
        import lab as lab_mod  # pylint: disable=import-outside-toplevel
        self.lab_mod = lab_mod
        self.lab = None
        self.all_names = []
        self.container_seconds = 0
        self.started = time.monotonic()
        self.results = {
            'date': time.strftime('%Y-%m-%d %H:%M %Z'),
            'stamp': self.stamp,
            'args': vars(args),
            'machine': self.machine(),
            'single': {},
            'loop': {},
            'multihost': {},
            'notes': [],
        }

    def where(self, path=None):
        """A path for the log: relative to the checkout when inside it."""
        path = Path(path or self.out)
        try:
            return path.relative_to(REPO)
        except ValueError:
            return path

    # -- environment facts
    def machine(self):
        def cmd(argv):
            try:
                return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                return ''
        cpu = ''
        try:
            for line in open('/proc/cpuinfo'):
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
        except OSError:
            pass
        mem_kb = 0
        for line in open('/proc/meminfo'):
            if line.startswith('MemTotal:'):
                mem_kb = int(line.split()[1])
        import pyroute2  # pylint: disable=import-outside-toplevel
        return {
            'cpus': os.cpu_count(), 'cpu_model': cpu, 'mem_gb': round(mem_kb / 1024 / 1024, 1),
            'kernel': platform.release(), 'python': platform.python_version(),
            'ansible_core': cmd([os.path.join(os.environ['NP_VENV'], 'bin', 'ansible'), '--version']).splitlines()[0:1],
            'pyroute2': getattr(pyroute2, '__version__', '?'),
            'ovs': cmd(['ovs-vsctl', '--version']).splitlines()[0:1],
            'docker': cmd(['docker', 'version', '--format', '{{.Server.Version}}']),
            'git': cmd(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD']),
            'git_dirty': bool(cmd(['git', '-C', str(REPO), 'status', '--porcelain', '--untracked-files=no'])),
            'loadavg_start': open('/proc/loadavg').read().split()[:3],
        }

    def elapsed(self):
        return time.monotonic() - self.started

    def note(self, msg):
        """Log msg and keep it in the results' notes (the report lists them)."""
        self.log(msg)
        self.results['notes'].append(msg)

    # -- the time budget
    def fits(self, estimate, what):
        """True when `what` (estimated `estimate` s) fits in --budget, leaving time for cleanup and report."""
        if self.elapsed() + estimate + self.reserve() <= self.args.budget:
            return True
        self.note('%s skipped to stay within the %d s budget (estimated %.0f s, %.0f s already spent)'
                  % (what, self.args.budget, estimate, self.elapsed()))
        return False

    def reserve(self):
        return 60 + 0.3 * self.container_seconds  # lab down, container removal, report

    def save(self):
        self.results['bench_seconds'] = round(self.elapsed(), 1)
        write_json(self.out / 'results.json', self.results)
        if self.publish:
            write_json(BENCH / 'results' / 'latest.json', self.results)

    # -- lab
    def lab_up(self, hosts):
        if self.lab is not None:
            self.lab.down()
        lab = self.lab_mod.Lab(self.lab_name, hosts=hosts)
        lab.down()  # whatever an aborted run left
        lab.up()
        self.lab = self.lab_mod.Lab.load(self.lab_name)
        for host in self.lab.hosts:
            self.privatize(host)
        return self.lab

    def privatize(self, host):
        """Give a lab host the private /run and /var/lib paths a real machine has.

        Lab hosts share the root filesystem: without this, every host (and every other test on this
        machine) would share /run/netplumb-pipework.lock, so modules on 8 "hosts" would take turns on one
        lock, and /run/netns would be shared with the root namespace. Binds live in the host's private
        mount namespace only, and vanish with it.
        """
        base = self.lab.state_dir / 'bench-private' / host.name
        binds = [('run-np', '/run/netplumb-pipework'), ('varlib-np', '/var/lib/netplumb-pipework'),
                 ('netns', '/run/netns')]
        for src, dst in binds:
            (base / src).mkdir(parents=True, exist_ok=True)
            os.makedirs(dst, exist_ok=True)
        (base / 'lock').touch()
        ensure_host_lock()
        for src, dst in binds + [('lock', HOST_LOCK)]:
            run(self.lab.host_argv(host, ['mount', '--bind', str(base / src), dst]))

    def hexec(self, host, argv, check=True, log=True, timeout=3600):
        return run(self.lab.exec_argv(host, argv), check=check, log_path=self.cmdlog if log else None,
                   timeout=timeout)

    def hostops(self, host, *args, check=True):
        proc = self.hexec(host, [self.python, BENCH / 'hostops.py'] + list(args), check=check)[1]
        return last_json(proc.stdout)

    def reset(self, host, bridge=BRIDGE):
        shutil.rmtree(self.lab.state_dir / 'bench-private' / host / 'varlib-np' / 'attachments', ignore_errors=True)
        return self.hostops(host, 'reset', bridge, self.prefix)

    def lab_down(self):
        if self.lab is not None:
            self.lab.down()

    # -- containers
    def containers(self, count):
        import docker  # pylint: disable=import-outside-toplevel
        client = docker.from_env(timeout=300)
        names = ['%s%04d' % (self.prefix, i) for i in range(count)]
        existing = dict((c.name, c) for c in client.containers.list(all=True, filters={'name': self.prefix}))
        todo = []
        for name in names:
            c = existing.get(name)
            if c is not None and c.status != 'running':
                c.remove(force=True)
                c = None
            if c is None:
                todo.append(name)

        def start(name):
            client.containers.run(os.environ.get('NP_TEST_IMAGE', 'netplumb/busybox:test'), ['sleep', '1000000'],
                                  name=name, detach=True, network_mode='none', init=True)
        t = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(start, todo))
        self.log('containers: %d running (%d started in %.0f s)' % (count, len(todo), time.monotonic() - t))
        client.close()
        return names

    def remove_containers(self):
        import docker  # pylint: disable=import-outside-toplevel
        client = docker.from_env(timeout=300)
        # Low-level list (no inspect per container): a container removed meanwhile must not fail the cleanup.
        found = [c['Id'] for c in client.api.containers(all=True, filters={'name': self.prefix})
                 if any(n.lstrip('/').startswith(self.prefix) for n in c.get('Names') or [])]

        def remove(cid):
            try:
                client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(remove, found))
        client.close()
        return len(found)

    # -- ansible
    def ansible_env(self, results_path):
        env = dict(os.environ)
        env.update({
            'ANSIBLE_CALLBACK_PLUGINS': str(BENCH / 'callback_plugins'),
            'ANSIBLE_CALLBACKS_ENABLED': 'bench_results',
            'NP_BENCH_RESULTS': str(results_path),
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_HOST_KEY_CHECKING': 'False',
            'ANSIBLE_RETRY_FILES_ENABLED': 'False',
            'ANSIBLE_DEPRECATION_WARNINGS': 'False',
        })
        return env

    def playbook(self, playbook, limit, extra_vars, forks=5, inventories=()):
        """Run a playbook on lab hosts; (wall seconds, what bench_results recorded). Raises on any failure."""
        tag = '%s-%d' % (Path(playbook).stem, int(time.monotonic() * 1000))
        vars_path = self.out / ('%s.vars.json' % tag)
        res_path = self.out / ('%s.result.json' % tag)
        extra = dict(extra_vars)
        extra.setdefault('ansible_ssh_args', SSH_ARGS)
        write_json(vars_path, extra)
        argv = [self.ansible_playbook, '-i', self.lab.inventory_path]
        for inv in inventories:
            argv += ['-i', inv]
        argv += ['-l', limit, '-f', str(forks), '-e', '@%s' % vars_path, playbook]
        wall, proc = run(argv, check=False, env=self.ansible_env(res_path), cwd=REPO, log_path=self.cmdlog)
        try:
            with open(res_path) as f:
                cb = json.load(f)
        except (OSError, ValueError):
            cb = {'tasks': [], 'results': []}
        failed = [r for r in cb['results'] if r['status'] in ('failed', 'unreachable')]
        if proc.returncode != 0 or failed:
            raise RuntimeError('%s failed (rc=%d): %s\n%s' % (
                playbook, proc.returncode, [r.get('msg') for r in failed][:3], proc.stdout[-3000:]))
        return wall, cb

    # -- items
    def items(self, names, offset=0):
        return [{'container': name, 'address': address_of(offset + i), 'vlan': vlan_of(offset + i),
                 'ifname': 'eth1', 'host_ifname': 'npf%d' % (offset + i)} for i, name in enumerate(names)]

    def spec_file(self, items, tag, bridge=BRIDGE):
        path = self.out / ('spec-%s.json' % tag)
        write_json(path, {'bridge': bridge, 'items': items})
        return path

    def verify(self, host, spec_path, what):
        out = self.hostops(host, 'verify', spec_path, check=False)
        ok = bool(out) and out.get('problem_count') == 0
        self.log('  verify %s: %s' % (what, 'ok (%d wired, pings %s)' % (out['checked'], out['pings']) if ok else out))
        if not ok:
            self.results['notes'].append('verification of %s failed: %s' % (what, out))
        return ok
