"""Turn a benchmark run (bench/results/<stamp>/results.json) into docs/performance.md and docs/performance.png.

    python bench/report.py bench/results/latest.json [--md docs/performance.md] [--png docs/performance.png]

Numbers are medians of the run's repetitions; ratios compare methods measured side by side in that run.
The hand-written analysis (where the time goes, what would close a gap) comes from bench/analysis.md.
"""

import argparse
import json
import os
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def med(runs, key='wall'):
    vals = [r.get(key) for r in runs or [] if isinstance(r, dict) and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit=' s', digits=2):
    if v is None:
        return 'n/a'
    if v >= 100:
        return '%.0f%s' % (v, unit)
    return ('%.' + str(digits) + 'f%s') % (v, unit)


def ratio(x, y):
    if x is None or y is None or y == 0:
        return None
    return x / y


def rfmt(v):
    return 'n/a' if v is None else '%.1fx' % v if v >= 1 else '%.2fx' % v


def spread(runs, key='wall'):
    vals = [r.get(key) for r in runs or [] if r.get(key) is not None]
    if len(vals) < 2:
        return ''
    return ' (%s-%s)' % (fmt(min(vals), '', 2), fmt(max(vals), '', 2))


def paired(num, den, key_num='wall', key_den='wall'):
    """Median of per-repetition ratios num[i] / den[i] (runs of one repetition ran minutes apart at most)."""
    vals = [x[key_num] / y[key_den] for x, y in zip(num or [], den or [])
            if x.get(key_num) is not None and y.get(key_den)]
    return (statistics.median(vals), min(vals), max(vals)) if vals else (None, None, None)


def pfmt(triple):
    mid, lo, hi = triple
    if mid is None:
        return 'n/a'
    return rfmt(mid) if lo == hi else '%s (%s-%s)' % (rfmt(mid), rfmt(lo), rfmt(hi))


def single_rows(res):
    rows = []
    for n in sorted(res['single'], key=int):
        s = res['single'][n]
        loop = res['loop'].get(n) or {}
        rows.append({
            'n': int(n),
            'a': med(s['a']), 'a_int': med(s['a'], 'internal'), 'e': med(s['e']), 'e_int': med(s['e'], 'internal'),
            'c': med(s['c']), 'd': med(s['d']), 'd_int': med(s['d'], 'internal'),
            'b': loop.get('wall'), 'b_skipped': loop.get('skipped'), 'b_estimate': loop.get('estimate'),
            'runs': s,
        })
    return rows


def targets(res, rows):
    out = []
    big = [r for r in rows if r['n'] == 200] or rows[-1:]
    if big:
        r = big[0]
        n = r['n']
        speed = ratio(r['c'], r['a'])
        out.append(('(a) at N=%d at least 5x faster than (c) (stretch 8x)' % n,
                    '%s faster (medians: a %s, c %s; per repetition %s)'
                    % (rfmt(speed), fmt(r['a']), fmt(r['c']), pfmt(paired(r['runs']['c'], r['runs']['a']))),
                    None if speed is None else ('met, stretch met' if speed >= 8 else 'met, stretch missed' if speed >= 5
                                                else 'MISSED')))
        within = ratio(r['a_int'], r['d_int'])
        out.append(('(a) module-internal at N=%d within 1.5x of the floor (d)' % n,
                    '%s of the floor (medians: module %s, floor %s; per repetition %s)'
                    % (rfmt(within), fmt(r['a_int']), fmt(r['d_int']),
                       pfmt(paired(r['runs']['a'], r['runs']['d'], 'internal', 'internal'))),
                    None if within is None else ('met' if within <= 1.5 else 'MISSED')))
        noop = ratio(r['e'], r['a'])
        out.append(('(e) no-op at N=%d under half of (a)' % n,
                    '%s of (a) (medians: no-op %s, first run %s; per repetition %s). Module-internal: %s '
                    '(%s vs %s)' % (rfmt(noop), fmt(r['e']), fmt(r['a']), pfmt(paired(r['runs']['e'], r['runs']['a'])),
                                    rfmt(ratio(r['e_int'], r['a_int'])), fmt(r['e_int']), fmt(r['a_int'])),
                    None if noop is None else ('met' if noop < 0.5 else 'MISSED')))
    mh = res.get('multihost') or {}
    if mh.get('1') and mh.get(str(max(int(k) for k in mh))) and max(int(k) for k in mh) > 1:
        kmax = max(int(k) for k in mh)
        one, many = med(mh['1']), med(mh[str(kmax)])
        q = ratio(many, one)
        out.append(('%d hosts under 4x the 1-host wall time (forks >= 8)' % kmax,
                    '%s (1 host %s, %d hosts %s)' % (rfmt(q), fmt(one), kmax, fmt(many)),
                    None if q is None else ('met' if q < 4 else 'MISSED')))
    nat = res.get('nat') or {}
    nat_ratio = nat_speedup(nat)
    if nat_ratio is not None:
        out.append(('nat_portmap 500 ports at least 50x faster than an iptables-task loop',
                    '%s faster' % rfmt(nat_ratio), 'met' if nat_ratio >= 50 else 'MISSED'))
    else:
        out.append(('nat_portmap 500 ports at least 50x faster than an iptables-task loop',
                    nat.get('missing') or 'no figure from bench/nat_portmap_bench.py', 'not measured'))
    mem = res.get('memory') or {}
    if mem.get('vmhwm_mb'):
        out.append(('peak memory of the module process under 150 MB at N=%d' % mem['n'],
                    '%.1f MB VmHWM (%s targets, run %s)' % (mem['vmhwm_mb'], mem['targets'], 'ok' if mem['ok'] else 'FAILED'),
                    'met' if mem['vmhwm_mb'] < 150 and mem['ok'] else 'MISSED'))
    return out


def nat_speedup(nat):
    data = nat.get('data') if isinstance(nat, dict) else None
    if not isinstance(data, dict):
        return None
    for key in ('speedup', 'ratio', 'speedup_vs_iptables_loop'):
        if isinstance(data.get(key), (int, float)):
            return float(data[key])
    one = None
    loop = None
    for key, value in data.items():
        if not isinstance(value, (int, float)):
            continue
        k = key.lower()
        if 'loop' in k or 'iptables' in k:
            loop = value
        elif 'portmap' in k or 'module' in k or 'one' in k or 'batch' in k:
            one = value
    return ratio(loop, one)


def short_task(name):
    """'role : Task name | item' -> 'Task name', at most 45 characters."""
    name = name.split(' : ', 1)[-1].split(' | ', 1)[0]
    return name if len(name) <= 45 else name[:44] + '...'


def plot(rows, res, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={'width_ratios': [3, 2]})
    ax = axes[0]
    ns = [r['n'] for r in rows]
    series = [
        ('b', '(b) Ansible loop of single attachments', 'tab:purple', 's'),
        ('c', '(c) ovs-docker add-port + set-vlan loop', 'tab:red', 'v'),
        ('a', '(a) ansible-playbook, one docker_veth task', 'tab:blue', 'o'),
        ('e', '(e) no-op re-run of (a)', 'tab:cyan', 'o'),
        ('a_int', '(a) module-internal time', 'tab:green', '^'),
        ('d', '(d) floor (raw netlink + one ovs-vsctl), process', 'black', 'D'),
    ]
    for key, label, color, marker in series:
        pts = [(r['n'], r[key]) for r in rows if r.get(key)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=label,
                    linestyle='--' if key in ('e', 'a_int') else '-')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel('containers on one host (N), each with a VLAN tag and an address')
    ax.set_ylabel('wall time, seconds (log)')
    ax.set_title('Single host: time to wire N containers (median)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8, loc='upper left')
    ax = axes[1]
    mh = res.get('multihost') or {}
    if mh:
        ks = sorted(int(k) for k in mh)
        walls = [med(mh[str(k)]) for k in ks]
        ax.plot(ks, walls, marker='o', color='tab:blue', label='multi-host playbook, wall')
        one = walls[0] if ks and ks[0] == 1 else None
        if one:
            ax.plot(ks, [one * 4] * len(ks), linestyle=':', color='tab:red', label='target: 4x the 1-host time')
        ax.set_xticks(ks)
        ax.set_xlabel('lab hosts (20 containers each), forks >= 8')
        ax.set_ylabel('seconds')
        ax.set_ylim(bottom=0)
        ax.set_title('Multi-host (%s)' % os.path.basename(res.get('multihost_playbook', '')))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()
    fig.suptitle('netplumb.pipework benchmark, %s, %d cores' % (res['date'], res['machine']['cpus']), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def components_section(comp):
    if not comp:
        return []
    n = comp['n']

    def row(label, key, floor_key, floor_label):
        a, b = comp.get(key), comp.get(floor_key)
        if not a or not b:
            return None
        return '| %s | %s / %s | %.2f ms | %s | %s / %s | %s |' % (
            label, fmt(a['wall'], digits=3), fmt(a['cpu'], digits=3), a['cpu'] / n * 1000, floor_label,
            fmt(b['wall'], digits=3), fmt(b['cpu'], digits=3), rfmt(ratio(a['cpu'], b['cpu'])))
    lines = ['', 'The pieces, priced at N=%d on the wired host (`bench/components.py`; wall / CPU seconds of the '
             'measuring process; CPU is what a loaded machine distorts least):' % n, '',
             '| piece, as the module does it | wall / CPU | CPU per item | the least it can cost | wall / CPU | CPU ratio |',
             '|---|---:|---:|---|---:|---:|']
    for r in (row('%d Docker inspects with the Docker SDK (`docker/containers.py`)' % n, 'docker_sdk', 'docker_raw',
                  'pipelined raw HTTP on one connection (floor.py)'),
              row('the same, SDK session with `trust_env = False`', 'docker_sdk_noenv', 'docker_httpclient',
                  'stdlib `http.client` over the socket, one by one'),
              row('%d namespaces: `IPRoute()` via setns + link/addr/route dumps (`linux/netlink_state.py`)' % n,
                  'ns_pyroute2', 'ns_raw', 'raw netlink socket, same three dumps'),
              row('of which opening `IPRoute()` in the namespace', 'ns_pyroute2_open', 'ns_raw',
                  '(the raw figure includes its dumps)')):
        if r:
            lines.append(r)
    imports = comp.get('imports_ms') or {}
    lines.append('')
    lines.append('Imports in a fresh interpreter on the host (paid by every module run, outside `elapsed`): %s; '
                 'one `ovs-vsctl` JSON read of Bridge/Port/Interface with N ports: %s.'
                 % (', '.join('`%s` %d ms' % (k, v) for k, v in imports.items()),
                    fmt((comp.get('ovs_read') or {}).get('wall'), digits=3)))
    return lines


def profile_section(res):
    prof = res.get('profile') or {}
    if not prof:
        return []
    lines = []
    for phase in ('first', 'noop'):
        p = prof.get(phase)
        if p and p.get('cpu') is not None:
            lines.append('')
            what = 'first run' if phase == 'first' else 'no-op re-run'
            lines.append('Module process at N=%d, %s, run plainly (not profiled): `elapsed` %s, process %s, CPU %s '
                         '(+ %s in ovs-vsctl children).'
                         % (p['n'], what, fmt(p.get('internal')), fmt(p.get('wall')), fmt(p.get('cpu')),
                            fmt(p.get('cpu_children'))))
    lines += components_section(prof.get('components'))
    # module_utils/<package>/ since the move into subpackages; the flat names (veth_apply...) for older results.
    interesting = ('module_utils/veth/', 'module_utils/docker/', 'module_utils/linux/', 'module_utils/ovs/',
                   'veth_apply', 'docker_target', 'netlink_state', 'netns', 'ovsdb', 'attachment_store', 'veth_plan',
                   'veth_spec', 'host_lock', 'inspect_container', 'pyroute2/__init__', 'docker/__init__',
                   'run_command', 'subprocess.py', 'basic.py', 'requests/sessions', 'iproute/linux', 'get_links',
                   'link_lookup', 'docker_veth.py')
    for phase in ('first', 'noop'):
        p = prof.get(phase)
        if not p:
            continue
        lines.append('')
        lines.append('cProfile of the module process at N=%d, %s run (under the profiler: `elapsed` %s; `%s`):'
                     % (p['n'], 'first' if phase == 'first' else 'no-op', fmt(p.get('profiled_internal', p.get('internal'))),
                        p['stats']))
        lines.append('')
        lines.append('| function | calls | cumulative s | own s |')
        lines.append('|---|---:|---:|---:|')
        shown = 0
        for row in p['top']['cumulative']:
            if not any(k in row['func'] for k in interesting):
                continue
            lines.append('| `%s` | %d | %.3f | %.3f |' % (row['func'], row['calls'], row['cumtime'], row['tottime']))
            shown += 1
            if shown >= 22:
                break
    return lines


def render(res, rows, png_rel):
    m = res['machine']
    L = []
    L.append('# Performance')
    L.append('')
    L.append('Measured on %s by `python3 bench/run.py` (raw data: `bench/results/%s/results.json`, git `%s`%s).'
             % (res['date'], res['stamp'], m.get('git'), ', with uncommitted changes of other work in progress' if m.get('git_dirty') else ''))
    L.append('Machine: %d cores (%s), %.0f GB RAM, kernel %s; %s; pyroute2 %s; %s (userspace datapath, '
             '`datapath_type=netdev`, in lab hosts); Docker %s. The whole benchmark took %.0f s.'
             % (m['cpus'], m.get('cpu_model') or '?', m.get('mem_gb') or 0, m['kernel'],
                (m.get('ansible_core') or ['?'])[0], m['pyroute2'], (m.get('ovs') or ['?'])[0], m.get('docker'),
                res.get('bench_seconds', 0)))
    L.append('Load average at start %s, at end %s: this machine is shared with other engineers\' test runs, so '
             'absolute seconds are noisy; the ratios compare methods measured side by side, interleaved, in the same run.'
             % ('/'.join(m.get('loadavg_start', [])), '/'.join(m.get('loadavg_end', []))))
    L.append('')
    L.append('![time against N](%s)' % png_rel)
    L.append('')
    L.append('## Single host: N containers, each with a VLAN tag (4 VLANs) and an IPv4 address')
    L.append('')
    L.append('Median of the repetitions made (%s; range in brackets); each run starts from the same state (a fresh, '
             'empty `netdev` bridge, containers running with `--net=none` and no extra interface).'
             % ', '.join('N=%d: %d' % (r['n'], len(r['runs']['a'])) for r in rows))
    L.append('')
    L.append('| N | (a) one task | (a) module-internal | (e) no-op re-run | (e) module-internal | (b) loop (1 run) '
             '| (c) ovs-docker loop | (d) floor, process | (d) floor, internal |')
    L.append('|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        s = r['runs']
        b = fmt(r['b']) if r['b'] else ('skipped (est. %s)' % fmt(r['b_estimate']) if r['b_skipped'] else 'not run')
        L.append('| %d | %s%s | %s | %s%s | %s | %s | %s%s | %s%s | %s |'
                 % (r['n'], fmt(r['a']), spread(s['a']), fmt(r['a_int'], digits=3), fmt(r['e']), spread(s['e']),
                    fmt(r['e_int'], digits=3), b, fmt(r['c']), spread(s['c']), fmt(r['d']), spread(s['d']),
                    fmt(r['d_int'], digits=3)))
    L.append('')
    L.append('Ratios (same run):')
    L.append('')
    L.append('| N | (c) / (a): one task vs ovs-docker | (b) / (a): loop vs one task | (a) module-internal / (d) floor internal '
             '| (a) / (d) process | (e) / (a): no-op vs first run | per container: (a) | (c) |')
    L.append('|---:|---:|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        L.append('| %d | %s | %s | %s | %s | %s | %s | %s |'
                 % (r['n'], rfmt(ratio(r['c'], r['a'])), rfmt(ratio(r['b'], r['a'])), rfmt(ratio(r['a_int'], r['d_int'])),
                    rfmt(ratio(r['a'], r['d'])), rfmt(ratio(r['e'], r['a'])),
                    fmt(r['a'] / r['n'] * 1000 if r['a'] else None, ' ms', 0),
                    fmt(r['c'] / r['n'] * 1000 if r['c'] else None, ' ms', 0)))
    L.append('')
    L.append("Where (a)'s wall time goes (medians): start-up = ansible-playbook's process start to the first task; "
             "task = task start to its result, of which the module's own `elapsed`; the rest of the task is the SSH "
             "round trip, the module's transfer, interpreter start-up and imports on the host, and the result's "
             "return.")
    L.append('')
    fixed = res.get('fixed') or []
    if fixed:
        L.append('For reference, (f) a play with one `ansible.builtin.ping` task to the same host takes %s '
                 '(its task %s): the fixed cost of any one-task run over SSH here.' % (fmt(med(fixed)), fmt(med(fixed, 'task'))))
        L.append('')
    L.append('| N | (a) wall | start-up and play set-up | task | of which module | rest of the task | (e) task | of which module |')
    L.append('|---:|---:|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        s = r['runs']
        startup = med([{'v': x['wall'] - x['task']} for x in s['a'] if x.get('task') is not None], 'v')
        task = med(s['a'], 'task')
        etask = med(s['e'], 'task')
        L.append('| %d | %s | %s | %s | %s | %s | %s | %s |'
                 % (r['n'], fmt(r['a']), fmt(startup), fmt(task), fmt(r['a_int']),
                    fmt(task - r['a_int'] if task is not None and r['a_int'] is not None else None), fmt(etask),
                    fmt(r['e_int'])))
    L.append('')
    floor_rows = [(r['n'], r['runs']['d']) for r in rows]
    parts = []
    for n, runs in floor_rows:
        if runs:
            mid = sorted(runs, key=lambda x: x['internal'])[len(runs) // 2]['phases']
            parts.append('N=%d: %s' % (n, ', '.join('%s %s' % (k, fmt(v, ' s', 3)) for k, v in mid.items())))
    L.append('Floor phases (median run; cpu = CPU seconds of the floor process and its ovs-vsctl): ' + '; '.join(parts))
    L.append('')
    L.append('## Targets (issue 6)')
    L.append('')
    L.append('| target | measured | |')
    L.append('|---|---|---|')
    for name, measured, verdict in targets(res, rows):
        L.append('| %s | %s | **%s** |' % (name, measured, verdict or 'n/a'))
    L.append('')
    mh = res.get('multihost') or {}
    if mh:
        L.append('## Multi-host')
        L.append('')
        L.append('`%s` on k lab hosts at once (serial = k, forks = max(8, k)), %d containers per host. Every run starts '
                 'from freshly built lab hosts (uplink a plain NIC, no bridge). Median of the runs made (%s).'
                 % (res.get('multihost_playbook'), res['args']['mh_containers'],
                    ', '.join('%s hosts: %d' % (k, len(mh[k])) for k in sorted(mh, key=int))))
        L.append('')
        L.append('| hosts | containers | wall | vs 1 host | docker_veth module time per host (median of hosts) | slowest tasks |')
        L.append('|---:|---:|---:|---:|---:|---|')
        ks = sorted(int(k) for k in mh)
        one = med(mh['1']) if '1' in mh else None
        for k in ks:
            runs = mh[str(k)]
            w = med(runs)
            veth = [v for r in runs for v in r.get('docker_veth_elapsed', [])]
            mid = sorted(runs, key=lambda r: r['wall'])[len(runs) // 2]
            tasks = sorted([t for t in mid['tasks'] if t['seconds'] is not None], key=lambda t: -t['seconds'])[:3]
            L.append('| %d | %d | %s%s | %s | %s | %s |'
                     % (k, k * res['args']['mh_containers'], fmt(w), spread(runs), rfmt(ratio(w, one)),
                        fmt(statistics.median(veth), digits=3) if veth else 'n/a',
                        '; '.join('%s %s' % (short_task(t['name']), fmt(t['seconds'])) for t in tasks)))
        L.append('')
    nat = res.get('nat') or {}
    L.append('## nat_portmap: published ports, one task vs a loop of iptables tasks')
    L.append('')
    data = nat.get('data') if isinstance(nat.get('data'), dict) else None
    if nat.get('missing'):
        L.append('Not measured: %s.' % nat['missing'])
    elif data and 'ratio' in data:
        L.append('`bench/nat_portmap_bench.py` (written with nat_portmap; one run each, inside a throwaway namespace, '
                 'local connection): %d ports.' % data.get('ports', nat.get('ports', 0)))
        L.append('')
        L.append('| | wall | module-internal |')
        L.append('|---|---:|---:|')
        L.append('| one nat_portmap task (%d DNAT rules + hairpin and FORWARD rules, one iptables-restore) | %s | %s |'
                 % (data.get('ports', 0), fmt(data.get('nat_portmap_wall')), fmt(data.get('nat_portmap_module'), digits=3)))
        L.append('| the same task again (no change) | %s | %s |' % (fmt(data.get('rerun_wall')), fmt(data.get('rerun_module'), digits=3)))
        L.append('| loop of ansible.builtin.iptables tasks, one DNAT rule each | %s | |' % fmt(data.get('iptables_loop_wall')))
        L.append('| **loop / one task** | **%s** | |' % rfmt(data.get('ratio')))
        probe = (res.get('nat_probe') or {}).get('data')
        if probe and probe.get('ports') != data.get('ports'):
            L.append('')
            L.append('The %d-port probe run before it: one task %s (module %s), loop %s, ratio %s.'
                     % (probe.get('ports', 0), fmt(probe.get('nat_portmap_wall')), fmt(probe.get('nat_portmap_module'), digits=3),
                        fmt(probe.get('iptables_loop_wall')), rfmt(probe.get('ratio'))))
    else:
        L.append('`bench/nat_portmap_bench.py` gave no figure (rc %s after %s):' % (nat.get('rc'), fmt(nat.get('wall'))))
        L.append('')
        L.append('```')
        L.append(((nat.get('stdout_tail') or '') + (nat.get('stderr_tail') or ''))[-2000:])
        L.append('```')
    L.append('')
    mem = res.get('memory') or {}
    L.append('## Peak memory')
    L.append('')
    if mem:
        L.append('The module (run in its own python process inside a lab host, exactly as Ansible runs it: '
                 '`bench/module_child.py`) wiring N=%d `netns` targets (%d `ip netns add` namespaces, removed '
                 'afterwards) into one OVS bridge: VmHWM **%.1f MB** (ru_maxrss of the process %.1f MB), module time '
                 '%s, result %s.' % (mem['n'], mem['n'], mem['vmhwm_mb'], mem['ru_maxrss_mb'], fmt(mem.get('internal')),
                                     'ok' if mem['ok'] else 'FAILED: %s' % mem.get('msg')))
    else:
        L.append('Not measured in this run.')
    L.append('')
    L.append('## Where the time goes')
    L += profile_section(res)
    L.append('')
    analysis = REPO / 'bench' / 'analysis.md'
    if analysis.exists():
        L.append(analysis.read_text().rstrip())
        L.append('')
    if res.get('notes'):
        L.append('## Notes from the run')
        L.append('')
        for note in res['notes']:
            L.append('- %s' % note)
        L.append('')
    L.append('## How to rerun')
    L.append('')
    L.append('```')
    L.append('python3 bench/run.py            # full run (about %d min here), rewrites this file and the plot'
             % max(1, round(res.get('bench_seconds', 0) / 60)))
    L.append('python3 bench/run.py --quick    # smoke test: N=10, one repetition, results only in bench/results/')
    L.append('python3 bench/report.py bench/results/latest.json   # re-render this page from saved results')
    L.append('```')
    L.append('')
    L.append('See `bench/README.md` for what each method runs and the options (`--sizes`, `--reps`, `--loop-sizes`, '
             '`--hosts`, `--mem-n`, `--budget`, `--keep`).')
    L.append('')
    return '\n'.join(L)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('results')
    p.add_argument('--md', default=str(REPO / 'docs' / 'performance.md'))
    p.add_argument('--png', default=str(REPO / 'docs' / 'performance.png'))
    a = p.parse_args()
    with open(a.results) as f:
        res = json.load(f)
    rows = single_rows(res)
    Path(a.md).parent.mkdir(parents=True, exist_ok=True)
    plot(rows, res, a.png)
    png_rel = os.path.relpath(a.png, os.path.dirname(os.path.abspath(a.md)))
    Path(a.md).write_text(render(res, rows, png_rel))
    print('wrote %s and %s' % (a.md, a.png))


if __name__ == '__main__':
    main()
