"""The benchmark's one entry point: `python3 bench/run.py` (--quick: a short run; --smoke: every method once at N=2).

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
  the AnsiballZ payload of each module (bench/payload_size.py: zip bytes, a few seconds)

Costs: under 30 minutes (--budget 1740 s) for the full run; --quick a few minutes; --smoke about a minute
(every method and section once at N=2 on one lab host, results in a temporary directory, docs untouched).
Results: bench/results/<stamp>/ (raw JSON, logs, profiles; --out DIR elsewhere) and, unless --no-docs,
--quick, --smoke or --out, docs/performance.md and docs/performance.png (bench/report.py; rerun it alone
with `python bench/report.py RESULTS.json`). Everything it creates (lab "npbench", containers npbench-c*,
namespaces; "npsmoke" for --smoke) is removed at the end.

The code: session.py (the shared base: results, lab, containers, playbooks, budget), methods.py (one class
per measured method: a, b, c, d, e, f), sections.py (one class per part of results.json); this file
parses the options, orders the sections within the budget, cleans up and writes the report.
"""

import argparse
import os
import subprocess
import sys
import time

from sections import LoopSizes, Memory, MultiHost, Nat, Payload, Profile, SingleHost
from session import BENCH, REPO, Session, run

# bench/session.py: the shared base (results, lab, containers, playbooks, budget); bench/methods.py: one class
# per measured method (a, b, c, d, e, f); bench/sections.py: one class per part of results.json.


def bootstrap(argv):
    """Outside the venv: run setup.sh, then re-exec under scripts/env.sh with the venv's python."""
    if os.geteuid() != 0:
        sys.exit('bench/run.py must run as root (namespaces, OVS, Docker)')
    if '--no-setup' not in argv:
        subprocess.run(['bash', str(REPO / 'scripts' / 'setup.sh')], check=True)
    script = 'source "$0/scripts/env.sh" && export NP_BENCH_INNER=1 && exec "$NP_VENV/bin/python" "$0/bench/run.py" "$@"'
    os.execvp('bash', ['bash', '-c', script, str(REPO)] + argv)


def measure(s, single, loop, multihost):
    """Everything, in the order that gives every report its figures first.

    First one repetition of everything, then repetitions while the budget lasts: a loaded machine gets
    fewer repetitions, never a run past --budget.
    """
    a = s.args
    nhosts = max(a.hosts) if a.hosts else 1
    need = max(a.sizes + a.loop_sizes + [nhosts * a.mh_containers])
    Payload(s).run()
    s.lab_up(nhosts)
    s.log('lab %s up with %d hosts' % (s.lab_name, nhosts))
    t = time.monotonic()
    s.all_names = s.containers(need)
    s.container_seconds = time.monotonic() - t
    single.warm()
    for n in a.sizes[:1] if a.reps else []:
        single.rep(n, 0)
    for n in a.sizes[1:] if a.reps else []:
        if s.fits(single.rep_seconds.get((a.sizes[0], 'cda'), 0) * n / a.sizes[0], 'N=%d' % n):
            single.rep(n, 0)
    for n in [x for x in a.loop_sizes if x <= 50]:  # (b) at 10 and 50 always; 200 if time is left
        loop.run(n)
    mh_order = list(a.hosts) if a.mh_reps else []
    for k in mh_order:
        if k == mh_order[0] or s.fits(multihost.seconds[mh_order[0]] * 1.5, 'multi-host k=%d' % k):
            multihost.rep(k, 0)
    if a.hosts and a.mh_reps:
        s.lab_up(max(a.hosts))  # host1 back to a plain host for what follows
        single.warm()
    if a.mem_n and s.fits(single.module_estimate(a.mem_n) + 60, 'memory at N=%d' % a.mem_n):
        Memory(s).run()
    if not a.skip_profile and s.fits(single.module_estimate(max(a.sizes)) * 7 + 30, 'profile'):
        Profile(s).run()
    if not a.skip_nat:
        Nat(s).run()
    # Further repetitions of the fast methods (a, e, d), then of the slow ovs-docker loop (c).
    for rep in range(1, a.reps):
        for n in a.sizes:
            est = single.rep_seconds.get((n, 'cda'), 0) - single.c_seconds.get(n, 0)
            if str(n) in s.results['single'] and s.fits(est, 'N=%d rep %d of a, e, d' % (n, rep + 1)):
                single.rep(n, rep, methods='da')
    for rep in range(1, a.mh_reps):
        for k in mh_order:
            if k in multihost.seconds and s.fits(multihost.seconds[k], 'multi-host k=%d rep %d' % (k, rep + 1)):
                multihost.rep(k, rep)
    for rep in range(1, a.reps):
        for n in a.sizes:
            if n in single.c_seconds and s.fits(single.c_seconds[n] + 5, 'N=%d rep %d of c' % (n, rep + 1)):
                single.rep(n, rep, methods='c')
    for n in [x for x in a.loop_sizes if x > 50]:
        loop.run(n)


def bench(args):
    """One whole run: measure, clean up (unless --keep), write the report."""
    s = Session(args)
    a = args
    s.log('bench: results in %s' % s.where())
    try:
        measure(s, SingleHost(s), LoopSizes(s), MultiHost(s))
    except BaseException as exc:
        s.results['notes'].append('bench aborted: %r' % exc)
        s.log('ABORTED: %r' % exc)
        raise
    finally:
        s.results['machine']['loadavg_end'] = open('/proc/loadavg').read().split()[:3]
        s.save()
        if not a.keep:
            try:
                s.lab_down()
                removed = s.remove_containers()
                s.log('cleanup: lab down, %d containers removed' % removed)
            except Exception as exc:  # pylint: disable=broad-except
                s.log('cleanup failed (remove lab %s and containers %s* by hand): %r' % (s.lab_name, s.prefix, exc))
    s.save()
    report = [s.python, BENCH / 'report.py', s.out / 'results.json']
    if a.quick or a.no_docs or a.smoke or a.out:
        # A smoke test must not overwrite the published figures: its report stays with its results.
        report += ['--md', s.out / 'performance.md', '--png', s.out / 'performance.png']
    run(report, log_path=s.cmdlog)
    where = 'docs/performance.md and docs/performance.png' if len(report) == 3 else s.where()
    s.log('wrote the report to %s' % where)
    s.log('done in %.0f s' % s.elapsed())
    return s


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
    p.add_argument('--smoke', action='store_true', help='proof that everything runs: every method and section once '
                   'at N=2 on one host, lab "npsmoke", results in a temporary directory (or --out), docs untouched')
    p.add_argument('--out', help='directory for the results (default bench/results/<stamp>/); the report goes there '
                   'too, and bench/results/latest.json is left alone')
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.loop_sizes = [10], 1, [10]
        args.hosts, args.mh_reps, args.mem_n, args.nat_ports = [1, 2], 1, 50, 50
    if args.smoke:
        args.sizes, args.reps, args.loop_sizes, args.hosts, args.mh_containers = [2], 1, [2], [1], 2
        args.mh_reps, args.mem_n, args.nat_ports = 1, 2, 2
    return args


def main():
    argv = sys.argv[1:]
    if os.environ.get('NP_BENCH_INNER') != '1':
        bootstrap(argv)
    bench(parse_args(argv))


if __name__ == '__main__':
    main()
