"""The benchmark's one entry point: `python3 bench/run.py` (add --quick for a smoke test).

From a clean clone it runs scripts/setup.sh (idempotent, ~2 s when everything is there), re-executes itself
in the project venv (scripts/env.sh), brings up a namespace lab of 8 hosts (lab/lab.py), starts 200 test
containers (--net=none) and measures, side by side on this machine:

  single host, N in {10, 50, 200} containers with a VLAN tag and an address each, medians of --reps runs:
    a  ansible-playbook with ONE docker_veth task (attachments list) over SSH to a lab host
    b  the same as an Ansible loop of single attachments (one run; --loop-sizes)
    c  a shell loop of Debian's /usr/bin/ovs-docker add-port + set-vlan, inside the lab host
    d  the floor: bench/floor.py (raw netlink, peers born in the container namespaces, ONE ovs-vsctl)
    e  the no-op re-run of (a); and (a)'s module-internal time (its `elapsed` result)
  multi-host: playbooks/multihost_vlan.yml (or one docker_veth task per host) on 1, 2, 4, 8 hosts, 20 each
  nat_portmap: bench/nat_portmap_bench.py when it exists (another engineer's script; called, not edited)
  peak memory (VmHWM) of the module process at N=1000 netns targets
  a cProfile of the module at the largest N (where its time goes)

Results: bench/results/<stamp>/ (raw JSON, logs, profiles) and, unless --no-docs, docs/performance.md and
docs/performance.png (bench/report.py; rerun it alone with `python bench/report.py RESULTS.json`).
Everything it creates (lab "npbench", containers npbench-c*, namespaces) is removed at the end.
"""

import argparse
import json
import os
import platform
import shutil
import signal
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


# ---------------------------------------------------------------------------------------------- bootstrap

def bootstrap(argv):
    """Outside the venv: run setup.sh, then re-exec under scripts/env.sh with the venv's python."""
    if os.geteuid() != 0:
        sys.exit('bench/run.py must run as root (namespaces, OVS, Docker)')
    if '--no-setup' not in argv:
        subprocess.run(['bash', str(REPO / 'scripts' / 'setup.sh')], check=True)
    script = 'source "$0/scripts/env.sh" && export NP_BENCH_INNER=1 && exec "$NP_VENV/bin/python" "$0/bench/run.py" "$@"'
    os.execvp('bash', ['bash', '-c', script, str(REPO)] + argv)


# ---------------------------------------------------------------------------------------------- helpers

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


# ---------------------------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.stamp = time.strftime('%Y%m%d-%H%M%S')
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

    # -- lab
    def lab_up(self, hosts):
        if self.lab is not None:
            self.lab.down()
        lab = self.lab_mod.Lab(LAB_NAME, hosts=hosts)
        lab.down()  # whatever an aborted run left
        lab.up()
        self.lab = self.lab_mod.Lab.load(LAB_NAME)
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
        lock = base / 'lock'
        lock.touch()
        if not os.path.exists('/run/netplumb-pipework.lock'):
            fd = os.open('/run/netplumb-pipework.lock', os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        for src, dst in binds + [('lock', '/run/netplumb-pipework.lock')]:
            run(self.lab.host_argv(host, ['mount', '--bind', str(base / src), dst]))

    def hexec(self, host, argv, check=True, log=True, timeout=3600):
        return run(self.lab.exec_argv(host, argv), check=check, log_path=self.cmdlog if log else None,
                   timeout=timeout)

    def hostops(self, host, *args, check=True):
        proc = self.hexec(host, [self.python, BENCH / 'hostops.py'] + list(args), check=check)[1]
        return last_json(proc.stdout)

    def reset(self, host, bridge=BRIDGE):
        shutil.rmtree(self.lab.state_dir / 'bench-private' / host / 'varlib-np' / 'attachments', ignore_errors=True)
        return self.hostops(host, 'reset', bridge, CONTAINER_PREFIX)

    # -- containers
    def containers(self, count):
        import docker  # pylint: disable=import-outside-toplevel
        client = docker.from_env(timeout=300)
        names = ['%s%04d' % (CONTAINER_PREFIX, i) for i in range(count)]
        existing = dict((c.name, c) for c in client.containers.list(all=True, filters={'name': CONTAINER_PREFIX}))
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
        found = [c['Id'] for c in client.api.containers(all=True, filters={'name': CONTAINER_PREFIX})
                 if any(n.lstrip('/').startswith(CONTAINER_PREFIX) for n in c.get('Names') or [])]

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

    # ---------------------------------------------------------------------------------------- methods
    def method_a(self, host, items):
        attachments = [{'container': it['container'], 'address': it['address'], 'vlan': it['vlan']} for it in items]
        wall, cb = self.playbook(BENCH / 'playbooks' / 'batch.yml', host,
                                 {'bench_bridge': BRIDGE, 'bench_attachments': {host: attachments}})
        r = [x for x in cb['results'] if x['host'] == host][0]
        return {'wall': wall, 'internal': r.get('elapsed'), 'changed': r['changed'],
                'task': r['end'] - cb['tasks'][0]['start'] if cb['tasks'] else None, 'playbook_total': cb.get('total')}

    def method_f(self, host):
        wall, cb = self.playbook(BENCH / 'playbooks' / 'ping.yml', host, {})
        r = [x for x in cb['results'] if x['host'] == host][0]
        return {'wall': wall, 'task': r['end'] - cb['tasks'][0]['start'] if cb['tasks'] else None}

    def method_b(self, host, items):
        attachments = [{'container': it['container'], 'address': it['address'], 'vlan': it['vlan']} for it in items]
        wall, cb = self.playbook(BENCH / 'playbooks' / 'loop.yml', host,
                                 {'bench_bridge': BRIDGE, 'bench_attachments': {host: attachments}})
        r = [x for x in cb['results'] if x['host'] == host][0]
        internal = [e for e in r.get('item_elapsed', []) if e is not None]
        return {'wall': wall, 'internal': sum(internal) if internal else None, 'items': r.get('items'),
                'changed_items': r.get('item_changed')}

    def method_c(self, host, items):
        script = self.out / ('ovs-docker-%d.sh' % len(items))
        with open(script, 'w') as f:
            f.write('set -e\n')
            for it in items:
                f.write('/usr/bin/ovs-docker add-port %s eth1 %s --ipaddress=%s\n' % (BRIDGE, it['container'], it['address']))
                f.write('/usr/bin/ovs-docker set-vlan %s eth1 %s %d\n' % (BRIDGE, it['container'], it['vlan']))
        wall = self.hexec(host, ['bash', script])[0]
        return {'wall': wall}

    def method_d(self, host, items):
        spec = self.spec_file(items, 'floor-%d' % len(items))
        wall, proc = self.hexec(host, [self.python, BENCH / 'floor.py', spec])
        phases = last_json(proc.stdout)
        return {'wall': wall, 'internal': phases['total'], 'phases': phases}

    # ---------------------------------------------------------------------------------------- sections
    # -- the time budget
    def fits(self, estimate, what):
        """True when `what` (estimated `estimate` s) fits in --budget, leaving time for cleanup and report."""
        reserve = 60 + 0.3 * self.container_seconds  # lab down, container removal, report
        if self.elapsed() + estimate + reserve <= self.args.budget:
            return True
        msg = ('%s skipped to stay within the %d s budget (estimated %.0f s, %.0f s already spent)'
               % (what, self.args.budget, estimate, self.elapsed()))
        self.log(msg)
        self.results['notes'].append(msg)
        return False

    # -- single host
    def single_rep(self, n, rep, methods='cda'):
        """One repetition of c, d, a (+ e right after a) at N=n, in a rotating order, each from a reset host."""
        host = 'host1'
        items = self.items(self.all_names[:n])
        runs = self.results['single'].setdefault(str(n), {'a': [], 'c': [], 'd': [], 'e': []})
        orders = [('c', 'd', 'a'), ('d', 'a', 'c'), ('a', 'c', 'd')]
        t = time.monotonic()
        for m in [x for x in orders[rep % 3] if x in methods]:
            self.reset(host)
            r = getattr(self, 'method_' + m)(host, items)
            runs[m].append(r)
            inside = (' (internal %.3f s)' % r['internal']) if r.get('internal') else ''
            self.log('N=%d rep %d %s: %.2f s%s' % (n, rep + 1, m, r['wall'], inside))
            if rep == 0:
                self.verify(host, self.spec_file(items, 'verify-%d' % n), '%s at N=%d' % (m, n))
            if m == 'a':
                e = self.method_a(host, items)
                runs['e'].append(e)
                self.log('N=%d rep %d e (no-op): %.2f s (internal %.3f s, changed=%s)'
                         % (n, rep + 1, e['wall'], e['internal'] or 0, e['changed']))
                if e['changed']:
                    self.results['notes'].append('no-op re-run at N=%d reported changed' % n)
        if n == min(self.args.sizes) and 'a' in methods:
            f = self.method_f(host)
            self.results.setdefault('fixed', []).append(f)
            self.log('rep %d f (one ping task): %.2f s (task %.2f s)' % (rep + 1, f['wall'], f['task'] or 0))
        self.rep_seconds[(n, methods)] = time.monotonic() - t
        if 'c' in methods:
            self.c_seconds[n] = runs['c'][-1]['wall']
        self.save()

    def loop_run(self, n):
        host = 'host1'
        items = self.items(self.all_names[:n])
        if self.loop_per_item is not None and not self.fits(self.loop_per_item * n + 10, '(b) loop at N=%d' % n):
            self.results['loop'][str(n)] = {'skipped': True, 'estimate': self.loop_per_item * n}
            return
        self.reset(host)
        r = self.method_b(host, items)
        self.loop_per_item = r['wall'] / n
        self.log('N=%d b (loop): %.1f s (%.2f s per item; module-internal sum %.1f s)'
                 % (n, r['wall'], self.loop_per_item, r['internal'] or 0))
        self.verify(host, self.spec_file(items, 'verify-loop-%d' % n), 'b at N=%d' % n)
        self.results['loop'][str(n)] = r
        self.save()
        self.reset(host)

    # -- multi-host
    def multihost_rep(self, k, rep):
        playbook = REPO / 'playbooks' / 'multihost_vlan.yml'
        use_s3 = playbook.exists() and (REPO / 'roles' / 'multihost_vlan').exists() and not self.args.mh_simple
        self.results['multihost_playbook'] = str(playbook.relative_to(REPO)) if use_s3 else 'bench/playbooks/batch.yml'
        per_host = self.args.mh_containers
        t = time.monotonic()
        self.lab_up(max(self.args.hosts))  # fresh hosts: uplinks back to plain NICs, no attachments
        hosts = ['host%d' % (i + 1) for i in range(k)]
        per = {}
        for i, h in enumerate(hosts):
            names = self.all_names[i * per_host:(i + 1) * per_host]
            per[h] = [{'container': c, 'address': address_of(i * per_host + j), 'vlan': vlan_of(i * per_host + j)}
                      for j, c in enumerate(names)]
        if use_s3:
            inv = self.out / ('mh-inventory-%d.yml' % k)
            lines = ['all:', '  children:', '    lab:', '      hosts:']
            for h in hosts:
                lines.append('        %s:' % h)
                lines.append('          multihost_vlan_containers: %s' % json.dumps(per[h]))
            inv.write_text('\n'.join(lines) + '\n')
            extra = {'multihost_vlan_uplink': 'eth0', 'multihost_vlan_bridge': MH_BRIDGE,
                     'multihost_vlan_datapath_type': 'netdev', 'multihost_vlan_serial': k}
            wall, cb = self.playbook(playbook, ','.join(hosts), extra, forks=max(8, k), inventories=[inv])
        else:
            wall, cb = self.playbook(BENCH / 'playbooks' / 'batch.yml', ','.join(hosts),
                                     {'bench_bridge': BRIDGE, 'bench_attachments': per}, forks=max(8, k))
        tasks = self.task_times(cb)
        veth = [r.get('elapsed') for r in cb['results'] if r.get('elapsed') is not None and
                ('docker_veth' in r['task'] or 'ttach' in r['task'])]
        self.results['multihost'].setdefault(str(k), []).append({'wall': wall, 'tasks': tasks, 'docker_veth_elapsed': veth})
        self.log('multi-host %d x %d: %.1f s (docker_veth module times %s)'
                 % (k, per_host, wall, ', '.join('%.2f' % v for v in veth)))
        if rep == 0 and k == max(self.args.hosts):
            for i, h in enumerate(hosts):
                items = self.items(self.all_names[i * per_host:(i + 1) * per_host], offset=i * per_host)
                self.verify(h, self.spec_file(items, 'verify-mh-%s' % h), 'multi-host %s' % h)
        self.mh_seconds[k] = time.monotonic() - t
        self.save()

    @staticmethod
    def task_times(cb):
        """Wall time per task: from its start to the last host's result."""
        out = []
        for t in cb.get('tasks', []):
            ends = [r['end'] for r in cb['results'] if r['task'] == t['name']]
            out.append({'name': t['name'], 'seconds': round(max(ends) - t['start'], 3) if ends else None})
        return out

    def nat(self):
        """bench/nat_portmap_bench.py (the nat_portmap work's script, called as it is): 500 ports, one task vs
        a loop of ansible.builtin.iptables tasks. A 20-port probe first prices one iptables task; fewer than
        500 ports only when 500 would overrun the budget (and the report says so)."""
        script = BENCH / 'nat_portmap_bench.py'
        if not script.exists():
            self.results['nat'] = {'missing': 'bench/nat_portmap_bench.py is not there (yet)'}
            self.log('nat: bench/nat_portmap_bench.py not present, skipped')
            return
        helped = run([self.python, script, '--help'], check=False)[1]
        text = helped.stdout + helped.stderr
        wanted = self.args.nat_ports
        probe = self.nat_once(script, text, 20 if wanted > 50 else wanted, 'nat-probe')
        self.results['nat_probe'] = probe
        if wanted == 50 or not (probe.get('data') or {}).get('iptables_loop_wall'):
            self.results['nat'] = probe
            return
        per_task = probe['data']['iptables_loop_wall'] / probe['ports']
        ports = wanted
        left = self.args.budget - self.elapsed() - (60 + 0.3 * self.container_seconds)
        while ports > 50 and ports * per_task * 1.3 + 30 > left:
            ports = ports * 2 // 3
        if ports != wanted:
            note = ('nat_portmap benchmark run with %d ports instead of %d: at %.2f s per iptables task (probe) '
                    '%d would overrun the budget' % (ports, wanted, per_task, wanted))
            self.log(note)
            self.results['notes'].append(note)
        self.results['nat'] = self.nat_once(script, text, ports, 'nat')

    def nat_once(self, script, helptext, ports, tag):
        # nat_portmap takes the collection's host lock, /run/netplumb-pipework.lock: on this machine the same
        # file every other test run uses. Run the script in a private mount namespace whose lock file is its
        # own (a dedicated host), or its module time measures other people's tests holding the lock.
        lock = self.out / 'nat-private.lock'
        lock.touch()
        if not os.path.exists('/run/netplumb-pipework.lock'):
            os.close(os.open('/run/netplumb-pipework.lock', os.O_CREAT | os.O_RDWR, 0o600))
        argv = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                'mount --bind "$1" /run/netplumb-pipework.lock && shift && exec "$@"', 'sh', lock, self.python, script]
        if '--ports' in helptext:
            argv += ['--ports', str(ports)]
        if '--json' in helptext:
            argv.append('--json')
        t = time.monotonic()
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO, start_new_session=True)
        timeout = max(120, self.args.budget - self.elapsed() - 60)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Its own process group (started here): SIGINT lets its `finally` delete its namespace.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                stdout, stderr = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            self.results['notes'].append('nat_portmap benchmark stopped after %.0f s (budget)' % timeout)
        wall = time.monotonic() - t
        (self.out / ('%s.log' % tag)).write_text('$ %s\nrc=%s\n%s\n%s' % (' '.join(map(str, argv)), proc.returncode,
                                                                          stdout, stderr))
        data = last_json(stdout or '')
        detail = json.dumps(data) if data else (stdout or '')[-300:]
        self.log('%s: %d ports, rc=%s in %.0f s: %s' % (tag, ports, proc.returncode, wall, detail))
        self.save()
        return {'rc': proc.returncode, 'wall': wall, 'data': data, 'ports': ports,
                'stdout_tail': (stdout or '')[-3000:], 'stderr_tail': (stderr or '')[-1500:]}

    def memory(self):
        host = 'host1'
        n = self.args.mem_n
        self.reset(host)
        t = time.monotonic()
        self.hostops(host, 'netns-add', NETNS_PREFIX, str(n))
        self.log('memory: %d namespaces made in %.1f s' % (n, time.monotonic() - t))
        try:
            items = [{'netns': '%s%04d' % (NETNS_PREFIX, i), 'address': [address_of(i)], 'vlan': vlan_of(i)}
                     for i in range(n)]
            args_path = self.out / 'memory-args.json'
            # 1000 new ports on a userspace-datapath OVS take ovs-vswitchd longer than ovs-vsctl's default 30 s.
            write_json(args_path, {'ANSIBLE_MODULE_ARGS': {'bridge': BRIDGE, 'bridge_type': 'ovs', 'timeout': 900,
                                                           'attachments': items}})
            out_path = self.out / 'memory-out.json'
            argv = self.lab.exec_argv(host, [self.python, BENCH / 'module_child.py', args_path, out_path])
            t = time.monotonic()
            proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            status, rusage = os.wait4(proc.pid, 0)[1:]
            wall = time.monotonic() - t
            proc.returncode = os.waitstatus_to_exitcode(status)
            stderr = proc.stderr.read().decode(errors='replace')
            data = json.loads(out_path.read_text())
            result = data.get('result') or {}
            ok = bool(result) and not result.get('failed') and len(result.get('attachments', [])) == n
            self.results['memory'] = {
                'n': n, 'targets': 'netns', 'vmhwm_mb': round(data['vmhwm_kb'] / 1024, 1),
                'ru_maxrss_mb': round(rusage.ru_maxrss / 1024, 1), 'wall': round(wall, 2),
                'internal': result.get('elapsed'), 'ok': ok, 'msg': result.get('msg'), 'stderr': stderr[-1000:]}
            self.log('memory: N=%d VmHWM %.1f MB (ru_maxrss %.1f MB), module %.1f s, ok=%s %s'
                     % (n, data['vmhwm_kb'] / 1024, rusage.ru_maxrss / 1024, result.get('elapsed') or -1, ok,
                        result.get('msg') or ''))
        finally:
            out = self.hostops(host, 'netns-del', NETNS_PREFIX, check=False)
            self.log('memory: cleaned up %s' % out)
            self.reset(host)

    def profile(self):
        """Where the module's time goes at the largest N, run inside the host like Ansible runs it.

        Per phase (first run, no-op re-run): one plain run for wall and CPU time, one under cProfile. Then
        bench/components.py prices the pieces (imports, Docker inspects, namespace reads) next to their floor.
        """
        host = 'host1'
        n = max(self.args.sizes)
        items = [{'container': it['container'], 'address': [it['address']], 'vlan': it['vlan']}
                 for it in self.items(self.all_names[:n])]
        args_path = self.out / 'profile-args.json'
        write_json(args_path, {'ANSIBLE_MODULE_ARGS': {'bridge': BRIDGE, 'bridge_type': 'ovs', 'attachments': items}})
        prof = {}
        for phase in ('first', 'noop'):
            entry = {'n': n}
            for mode in ('plain', 'profiled'):
                if phase == 'first':
                    self.reset(host)  # the no-op phase runs on what the first phase's last run made
                out_path = self.out / ('profile-%s-%s.json' % (phase, mode))
                stats = self.out / ('profile-%s.prof' % phase)
                extra = ['--profile', stats] if mode == 'profiled' else []
                self.hexec(host, [self.python, BENCH / 'module_child.py', args_path, out_path] + extra)
                data = json.loads(out_path.read_text())
                result = data['result'] or {}
                if mode == 'plain':
                    entry.update({'wall': data['wall'], 'internal': result.get('elapsed'), 'cpu': data['cpu'],
                                  'cpu_children': data['cpu_children'], 'changed': result.get('changed')})
                else:
                    entry.update({'profiled_internal': result.get('elapsed'), 'stats': str(stats.relative_to(REPO)),
                                  'top': self.profile_summary(stats)})
            prof[phase] = entry
            self.log('profile %s N=%d: module %.2f s, process %.2f s, CPU %.2f s (+%.2f s ovs-vsctl)'
                     % (phase, n, entry['internal'] or -1, entry['wall'], entry['cpu'], entry['cpu_children']))
        # Attachments are in place (the no-op runs left them): price the pieces.
        spec = self.spec_file(self.items(self.all_names[:n]), 'components-%d' % n)
        proc = self.hexec(host, [self.python, BENCH / 'components.py', spec])[1]
        prof['components'] = last_json(proc.stdout)
        self.log('components: %s' % json.dumps(prof['components']))
        self.results['profile'] = prof
        self.reset(host)

    @staticmethod
    def profile_summary(path):
        import pstats  # pylint: disable=import-outside-toplevel
        st = pstats.Stats(str(path))
        rows = []
        for (filename, line, func), (cc, nc, tt, ct, callers) in st.stats.items():
            short = filename
            for marker in ('ansible_collections/netplumb/pipework/', 'site-packages/', 'lib/python3.11/'):
                if marker in filename:
                    short = filename.split(marker, 1)[1]
                    break
            rows.append({'func': '%s:%d(%s)' % (short, line, func), 'calls': nc, 'tottime': round(tt, 4),
                         'cumtime': round(ct, 4)})
        rows.sort(key=lambda r: -r['cumtime'])
        top_tot = sorted(rows, key=lambda r: -r['tottime'])[:25]
        return {'cumulative': rows[:80], 'tottime': top_tot}

    # ---------------------------------------------------------------------------------------- driver
    def save(self):
        self.results['bench_seconds'] = round(self.elapsed(), 1)
        write_json(self.out / 'results.json', self.results)
        write_json(BENCH / 'results' / 'latest.json', self.results)

    def main(self):
        a = self.args
        self.log('bench: results in %s' % self.out.relative_to(REPO))
        self.rep_seconds, self.mh_seconds, self.loop_per_item, self.container_seconds = {}, {}, None, 0
        self.c_seconds = {}
        try:
            nhosts = max(a.hosts) if a.hosts else 1
            need = max(a.sizes + a.loop_sizes + [nhosts * a.mh_containers])
            self.lab_up(nhosts)
            self.log('lab %s up with %d hosts' % (LAB_NAME, nhosts))
            t = time.monotonic()
            self.all_names = self.containers(need)
            self.container_seconds = time.monotonic() - t
            self.warm()
            # First what every report needs (one repetition of everything), then repetitions while the
            # budget lasts: a loaded machine gets fewer repetitions, never a run past --budget.
            for n in a.sizes[:1] if a.reps else []:
                self.single_rep(n, 0)
            for n in a.sizes[1:] if a.reps else []:
                if self.fits(self.rep_seconds.get((a.sizes[0], 'cda'), 0) * n / a.sizes[0], 'N=%d' % n):
                    self.single_rep(n, 0)
            for n in [x for x in a.loop_sizes if x <= 50]:  # (b) at 10 and 50 always; 200 if time is left
                self.loop_run(n)
            mh_order = list(a.hosts) if a.mh_reps else []
            for k in mh_order:
                if k == mh_order[0] or self.fits(self.mh_seconds[mh_order[0]] * 1.5, 'multi-host k=%d' % k):
                    self.multihost_rep(k, 0)
            if a.hosts and a.mh_reps:
                self.lab_up(max(a.hosts))  # host1 back to a plain host for what follows
                self.warm()
            if a.mem_n and self.fits(self.module_estimate(a.mem_n) + 60, 'memory at N=%d' % a.mem_n):
                self.memory()
            if not a.skip_profile and self.fits(self.module_estimate(max(a.sizes)) * 7 + 30, 'profile'):
                self.profile()
            if not a.skip_nat:
                self.nat()
            # Further repetitions of the fast methods (a, e, d), then of the slow ovs-docker loop (c).
            for rep in range(1, a.reps):
                for n in a.sizes:
                    est = self.rep_seconds.get((n, 'cda'), 0) - self.c_seconds.get(n, 0)
                    if str(n) in self.results['single'] and self.fits(est, 'N=%d rep %d of a, e, d' % (n, rep + 1)):
                        self.single_rep(n, rep, methods='da')
            for rep in range(1, a.mh_reps):
                for k in mh_order:
                    if k in self.mh_seconds and self.fits(self.mh_seconds[k], 'multi-host k=%d rep %d' % (k, rep + 1)):
                        self.multihost_rep(k, rep)
            for rep in range(1, a.reps):
                for n in a.sizes:
                    if n in self.c_seconds and self.fits(self.c_seconds[n] + 5, 'N=%d rep %d of c' % (n, rep + 1)):
                        self.single_rep(n, rep, methods='c')
            for n in [x for x in a.loop_sizes if x > 50]:
                self.loop_run(n)
        except BaseException as exc:
            self.results['notes'].append('bench aborted: %r' % exc)
            self.log('ABORTED: %r' % exc)
            raise
        finally:
            self.results['machine']['loadavg_end'] = open('/proc/loadavg').read().split()[:3]
            self.save()
            if not a.keep:
                try:
                    if self.lab is not None:
                        self.lab.down()
                    removed = self.remove_containers()
                    self.log('cleanup: lab down, %d containers removed' % removed)
                except Exception as exc:  # pylint: disable=broad-except
                    self.log('cleanup failed (remove lab %s and containers %s* by hand): %r'
                             % (LAB_NAME, CONTAINER_PREFIX, exc))
        self.results['bench_seconds'] = round(self.elapsed(), 1)
        self.save()
        report = [self.python, BENCH / 'report.py', self.out / 'results.json']
        if a.quick or a.no_docs:
            # A smoke test must not overwrite the published figures: its report stays with its results.
            report += ['--md', self.out / 'performance.md', '--png', self.out / 'performance.png']
        run(report, log_path=self.cmdlog)
        where = 'docs/performance.md and docs/performance.png' if len(report) == 3 else self.out.relative_to(REPO)
        self.log('wrote the report to %s' % where)
        self.log('done in %.0f s' % self.elapsed())

    def warm(self):
        """Open host1's SSH control master (kept 15 min), as a fleet run with several plays has it."""
        self.reset('host1')
        self.method_a('host1', self.items(self.all_names[:1]))
        self.reset('host1')

    def module_estimate(self, n):
        """Seconds the module needs for n attachments, from (a)'s module-internal time at the largest N run."""
        known = [(int(k), v['a'][0]['internal']) for k, v in self.results['single'].items() if v['a']]
        if not known:
            return 0.05 * n
        k, t = max(known)
        return t * n / k


def ints(text):
    return [int(x) for x in text.split(',') if x]


def parse_args(argv):
    p = argparse.ArgumentParser(description='netplumb.pipework benchmark (see bench/README.md)')
    p.add_argument('--quick', action='store_true', help='smoke test: N=10, one repetition, 2 hosts, small memory test')
    p.add_argument('--sizes', type=ints, default=[10, 50, 200])
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--loop-sizes', type=ints, default=[10, 50, 200])
    p.add_argument('--hosts', type=ints, default=[1, 2, 4, 8])
    p.add_argument('--mh-containers', type=int, default=20)
    p.add_argument('--mh-reps', type=int, default=3)
    p.add_argument('--mh-simple', action='store_true', help='multi-host with one docker_veth task per host, '
                   'not playbooks/multihost_vlan.yml')
    p.add_argument('--mem-n', type=int, default=1000)
    p.add_argument('--budget', type=int, default=1740, help='seconds for the whole run: repetitions and loop sizes that '
                   'would overrun it are skipped (and the report says so)')
    p.add_argument('--nat-ports', type=int, default=500)
    p.add_argument('--skip-nat', action='store_true')
    p.add_argument('--skip-profile', action='store_true')
    p.add_argument('--keep', action='store_true', help='keep the lab and containers (debugging)')
    p.add_argument('--no-docs', action='store_true', help='write the report next to the results, not to docs/ '
                   '(implied by --quick)')
    p.add_argument('--no-setup', action='store_true', help='do not run scripts/setup.sh first')
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.loop_sizes = [10], 1, [10]
        args.hosts, args.mh_reps, args.mem_n, args.nat_ports = [1, 2], 1, 50, 50
    return args


def main():
    argv = sys.argv[1:]
    if os.environ.get('NP_BENCH_INNER') != '1':
        bootstrap(argv)
    args = parse_args(argv)
    Bench(args).main()


if __name__ == '__main__':
    main()
