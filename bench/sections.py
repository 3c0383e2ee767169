"""The sections of a benchmark run: each measures one thing and writes one part of results.json.

    SingleHost  results['single'][N] = {a, c, d, e: [runs]}, results['fixed'] = [f runs]; one repetition
                runs c, d, a (+ e right after a) in a rotating order, each from a reset host  (seconds-minutes)
    LoopSizes   results['loop'][N]: the (b) loop, once per N, skipped when its estimate overruns the budget
    MultiHost   results['multihost'][k] = [runs], results['multihost_playbook']: k freshly built lab hosts
    Nat         results['nat'], results['nat_probe']: bench/nat_portmap_bench.py (called, not edited)
    Memory      results['memory']: the module's peak memory (VmHWM) at --mem-n netns targets
    Profile     results['profile']: the module at the largest N under cProfile, and bench/components.py
    Payload     results['payload']: each module's AnsiballZ zip size (bench/payload_size.py, a few seconds)
bench/run.py decides their order and what fits in the time budget; every section saves the results when
it is done. bench/report.py reads the keys named above.
"""

import json
import os
import signal
import subprocess
import time

from methods import Floor, Loop, NoOp, OneTask, OvsDocker, PingTask
from session import BENCH, BRIDGE, MH_BRIDGE, NETNS_PREFIX, REPO, address_of, ensure_host_lock, last_json, run, \
    vlan_of, write_json

HOST = 'host1'  # the single-host sections all run on the lab's first host


class Section:
    """One part of the run; `session` is the bench/session.py Session it measures through."""

    def __init__(self, session):
        self.session = session
        self.results = session.results
        self.log = session.log


class SingleHost(Section):
    ORDERS = [('c', 'd', 'a'), ('d', 'a', 'c'), ('a', 'c', 'd')]

    def __init__(self, session):
        super().__init__(session)
        self.methods = dict((m.key, m(session)) for m in (OneTask, NoOp, OvsDocker, Floor, PingTask))
        self.rep_seconds = {}  # (n, methods) -> seconds one repetition took
        self.c_seconds = {}    # n -> seconds of the last ovs-docker run

    def warm(self):
        """Open host1's SSH control master (kept 15 min), as a fleet run with several plays has it."""
        self.session.reset(HOST)
        self.methods['a'](HOST, self.session.items(self.session.all_names[:1]))
        self.session.reset(HOST)

    def rep(self, n, rep, methods='cda'):
        """One repetition of c, d, a (+ e right after a) at N=n, in a rotating order, each from a reset host."""
        s = self.session
        items = s.items(s.all_names[:n])
        runs = self.results['single'].setdefault(str(n), {'a': [], 'c': [], 'd': [], 'e': []})
        t = time.monotonic()
        for m in [x for x in self.ORDERS[rep % 3] if x in methods]:
            s.reset(HOST)
            r = self.methods[m](HOST, items)
            runs[m].append(r)
            inside = (' (internal %.3f s)' % r['internal']) if r.get('internal') else ''
            self.log('N=%d rep %d %s: %.2f s%s' % (n, rep + 1, m, r['wall'], inside))
            if rep == 0:
                s.verify(HOST, s.spec_file(items, 'verify-%d' % n), '%s at N=%d' % (m, n))
            if m == 'a':
                e = self.methods['e'](HOST, items)
                runs['e'].append(e)
                self.log('N=%d rep %d e (no-op): %.2f s (internal %.3f s, changed=%s)'
                         % (n, rep + 1, e['wall'], e['internal'] or 0, e['changed']))
                if e['changed']:
                    self.results['notes'].append('no-op re-run at N=%d reported changed' % n)
        if n == min(s.args.sizes) and 'a' in methods:
            f = self.methods['f'](HOST)
            self.results.setdefault('fixed', []).append(f)
            self.log('rep %d f (one ping task): %.2f s (task %.2f s)' % (rep + 1, f['wall'], f['task'] or 0))
        self.rep_seconds[(n, methods)] = time.monotonic() - t
        if 'c' in methods:
            self.c_seconds[n] = runs['c'][-1]['wall']
        s.save()

    def module_estimate(self, n):
        """Seconds the module needs for n attachments, from (a)'s module-internal time at the largest N run."""
        known = [(int(k), v['a'][0]['internal']) for k, v in self.results['single'].items() if v['a']]
        if not known:
            return 0.05 * n
        k, t = max(known)
        return t * n / k


class LoopSizes(Section):
    def __init__(self, session):
        super().__init__(session)
        self.method = Loop(session)
        self.per_item = None  # seconds per loop item, from the last loop run

    def run(self, n):
        s = self.session
        items = s.items(s.all_names[:n])
        if self.per_item is not None and not s.fits(self.per_item * n + 10, '(b) loop at N=%d' % n):
            self.results['loop'][str(n)] = {'skipped': True, 'estimate': self.per_item * n}
            return
        s.reset(HOST)
        r = self.method(HOST, items)
        self.per_item = r['wall'] / n
        self.log('N=%d b (loop): %.1f s (%.2f s per item; module-internal sum %.1f s)'
                 % (n, r['wall'], self.per_item, r['internal'] or 0))
        s.verify(HOST, s.spec_file(items, 'verify-loop-%d' % n), 'b at N=%d' % n)
        self.results['loop'][str(n)] = r
        s.save()
        s.reset(HOST)


class MultiHost(Section):
    def __init__(self, session):
        super().__init__(session)
        self.seconds = {}  # k -> seconds one round took (lab rebuild included)

    def rep(self, k, rep):
        s, args = self.session, self.session.args
        playbook = REPO / 'playbooks' / 'multihost_vlan.yml'
        use_s3 = playbook.exists() and (REPO / 'roles' / 'multihost_vlan').exists() and not args.mh_simple
        self.results['multihost_playbook'] = str(playbook.relative_to(REPO)) if use_s3 else 'bench/playbooks/batch.yml'
        per_host = args.mh_containers
        t = time.monotonic()
        s.lab_up(max(args.hosts))  # fresh hosts: uplinks back to plain NICs, no attachments
        hosts = ['host%d' % (i + 1) for i in range(k)]
        per = {}
        for i, h in enumerate(hosts):
            names = s.all_names[i * per_host:(i + 1) * per_host]
            per[h] = [{'container': c, 'address': address_of(i * per_host + j), 'vlan': vlan_of(i * per_host + j)}
                      for j, c in enumerate(names)]
        if use_s3:
            inv = s.out / ('mh-inventory-%d.yml' % k)
            lines = ['all:', '  children:', '    lab:', '      hosts:']
            for h in hosts:
                lines.append('        %s:' % h)
                lines.append('          multihost_vlan_containers: %s' % json.dumps(per[h]))
            inv.write_text('\n'.join(lines) + '\n')
            extra = {'multihost_vlan_uplink': 'eth0', 'multihost_vlan_bridge': MH_BRIDGE,
                     'multihost_vlan_datapath_type': 'netdev', 'multihost_vlan_serial': k}
            wall, cb = s.playbook(playbook, ','.join(hosts), extra, forks=max(8, k), inventories=[inv])
        else:
            wall, cb = s.playbook(BENCH / 'playbooks' / 'batch.yml', ','.join(hosts),
                                  {'bench_bridge': BRIDGE, 'bench_attachments': per}, forks=max(8, k))
        tasks = self.task_times(cb)
        veth = [r.get('elapsed') for r in cb['results'] if r.get('elapsed') is not None and
                ('docker_veth' in r['task'] or 'ttach' in r['task'])]
        self.results['multihost'].setdefault(str(k), []).append({'wall': wall, 'tasks': tasks, 'docker_veth_elapsed': veth})
        self.log('multi-host %d x %d: %.1f s (docker_veth module times %s)'
                 % (k, per_host, wall, ', '.join('%.2f' % v for v in veth)))
        if rep == 0 and k == max(args.hosts):
            for i, h in enumerate(hosts):
                items = s.items(s.all_names[i * per_host:(i + 1) * per_host], offset=i * per_host)
                s.verify(h, s.spec_file(items, 'verify-mh-%s' % h), 'multi-host %s' % h)
        self.seconds[k] = time.monotonic() - t
        s.save()

    @staticmethod
    def task_times(cb):
        """Wall time per task: from its start to the last host's result."""
        out = []
        for t in cb.get('tasks', []):
            ends = [r['end'] for r in cb['results'] if r['task'] == t['name']]
            out.append({'name': t['name'], 'seconds': round(max(ends) - t['start'], 3) if ends else None})
        return out


class Nat(Section):
    SCRIPT = BENCH / 'nat_portmap_bench.py'

    def run(self):
        """bench/nat_portmap_bench.py (the nat_portmap work's script, called as it is): 500 ports, one task vs
        a loop of ansible.builtin.iptables tasks. A 20-port probe first prices one iptables task; fewer than
        500 ports only when 500 would overrun the budget (and the report says so). At 50 ports or fewer the
        probe is the run."""
        s = self.session
        if not self.SCRIPT.exists():
            self.results['nat'] = {'missing': 'bench/nat_portmap_bench.py is not there (yet)'}
            self.log('nat: bench/nat_portmap_bench.py not present, skipped')
            return
        helped = run([s.python, self.SCRIPT, '--help'], check=False)[1]
        text = helped.stdout + helped.stderr
        wanted = s.args.nat_ports
        probe = self.once(text, 20 if wanted > 50 else wanted, 'nat-probe')
        self.results['nat_probe'] = probe
        if wanted <= 50 or not (probe.get('data') or {}).get('iptables_loop_wall'):
            self.results['nat'] = probe
            return
        per_task = probe['data']['iptables_loop_wall'] / probe['ports']
        ports = wanted
        left = s.args.budget - s.elapsed() - s.reserve()
        while ports > 50 and ports * per_task * 1.3 + 30 > left:
            ports = ports * 2 // 3
        if ports != wanted:
            s.note('nat_portmap benchmark run with %d ports instead of %d: at %.2f s per iptables task (probe) '
                   '%d would overrun the budget' % (ports, wanted, per_task, wanted))
        self.results['nat'] = self.once(text, ports, 'nat')

    def once(self, helptext, ports, tag):
        # nat_portmap takes the collection's host lock, /run/netplumb-pipework.lock: on this machine the same
        # file every other test run uses. Run the script in a private mount namespace whose lock file is its
        # own (a dedicated host), or its module time measures other people's tests holding the lock.
        s = self.session
        lock = s.out / 'nat-private.lock'
        lock.touch()
        ensure_host_lock()
        argv = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                'mount --bind "$1" /run/netplumb-pipework.lock && shift && exec "$@"', 'sh', lock, s.python, self.SCRIPT]
        if '--ports' in helptext:
            argv += ['--ports', str(ports)]
        if '--json' in helptext:
            argv.append('--json')
        t = time.monotonic()
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO, start_new_session=True)
        timeout = max(120, s.args.budget - s.elapsed() - 60)
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
        (s.out / ('%s.log' % tag)).write_text('$ %s\nrc=%s\n%s\n%s' % (' '.join(map(str, argv)), proc.returncode,
                                                                       stdout, stderr))
        data = last_json(stdout or '')
        detail = json.dumps(data) if data else (stdout or '')[-300:]
        self.log('%s: %d ports, rc=%s in %.0f s: %s' % (tag, ports, proc.returncode, wall, detail))
        s.save()
        return {'rc': proc.returncode, 'wall': wall, 'data': data, 'ports': ports,
                'stdout_tail': (stdout or '')[-3000:], 'stderr_tail': (stderr or '')[-1500:]}


class Memory(Section):
    def run(self):
        s = self.session
        n = s.args.mem_n
        s.reset(HOST)
        t = time.monotonic()
        s.hostops(HOST, 'netns-add', NETNS_PREFIX, str(n))
        self.log('memory: %d namespaces made in %.1f s' % (n, time.monotonic() - t))
        try:
            items = [{'netns': '%s%04d' % (NETNS_PREFIX, i), 'address': [address_of(i)], 'vlan': vlan_of(i)}
                     for i in range(n)]
            args_path = s.out / 'memory-args.json'
            # 1000 new ports on a userspace-datapath OVS take ovs-vswitchd longer than ovs-vsctl's default 30 s.
            write_json(args_path, {'ANSIBLE_MODULE_ARGS': {'bridge': BRIDGE, 'bridge_type': 'ovs', 'timeout': 900,
                                                           'attachments': items}})
            out_path = s.out / 'memory-out.json'
            argv = s.lab.exec_argv(HOST, [s.python, BENCH / 'module_child.py', args_path, out_path])
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
            out = s.hostops(HOST, 'netns-del', NETNS_PREFIX, check=False)
            self.log('memory: cleaned up %s' % out)
            s.reset(HOST)


class Profile(Section):
    def run(self):
        """Where the module's time goes at the largest N, run inside the host like Ansible runs it.

        Per phase (first run, no-op re-run): one plain run for wall and CPU time, one under cProfile. Then
        bench/components.py prices the pieces (imports, Docker inspects, namespace reads) next to their floor.
        """
        s = self.session
        n = max(s.args.sizes)
        items = [{'container': it['container'], 'address': [it['address']], 'vlan': it['vlan']}
                 for it in s.items(s.all_names[:n])]
        args_path = s.out / 'profile-args.json'
        write_json(args_path, {'ANSIBLE_MODULE_ARGS': {'bridge': BRIDGE, 'bridge_type': 'ovs', 'attachments': items}})
        prof = {}
        for phase in ('first', 'noop'):
            entry = {'n': n}
            for mode in ('plain', 'profiled'):
                if phase == 'first':
                    s.reset(HOST)  # the no-op phase runs on what the first phase's last run made
                out_path = s.out / ('profile-%s-%s.json' % (phase, mode))
                stats = s.out / ('profile-%s.prof' % phase)
                extra = ['--profile', stats] if mode == 'profiled' else []
                s.hexec(HOST, [s.python, BENCH / 'module_child.py', args_path, out_path] + extra)
                data = json.loads(out_path.read_text())
                result = data['result'] or {}
                if mode == 'plain':
                    entry.update({'wall': data['wall'], 'internal': result.get('elapsed'), 'cpu': data['cpu'],
                                  'cpu_children': data['cpu_children'], 'changed': result.get('changed')})
                else:
                    entry.update({'profiled_internal': result.get('elapsed'), 'stats': str(s.where(stats)),
                                  'top': self.summary(stats)})
            prof[phase] = entry
            self.log('profile %s N=%d: module %.2f s, process %.2f s, CPU %.2f s (+%.2f s ovs-vsctl)'
                     % (phase, n, entry['internal'] or -1, entry['wall'], entry['cpu'], entry['cpu_children']))
        # Attachments are in place (the no-op runs left them): price the pieces.
        spec = s.spec_file(s.items(s.all_names[:n]), 'components-%d' % n)
        proc = s.hexec(HOST, [s.python, BENCH / 'components.py', spec])[1]
        prof['components'] = last_json(proc.stdout)
        self.log('components: %s' % json.dumps(prof['components']))
        self.results['profile'] = prof
        s.reset(HOST)

    @staticmethod
    def summary(path):
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


class Payload(Section):
    def run(self):
        """Each module's AnsiballZ zip (bench/payload_size.py, in its own process: it installs a collection finder)."""
        s = self.session
        wall, proc = run([s.python, BENCH / 'payload_size.py'], check=False, cwd=REPO, log_path=s.cmdlog, timeout=600)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = {'error': 'bench/payload_size.py rc=%d: %s' % (proc.returncode, proc.stderr[-500:])}
        self.results['payload'] = data
        self.log('payload (%.1f s): %s' % (wall, ', '.join('%s %s bytes' % (k, v.get('zip_bytes'))
                                                           for k, v in sorted(data.items()) if isinstance(v, dict))))
        s.save()
