"""Benchmark: publish N ports (default 500) with ONE nat_portmap task, against a loop of
ansible.builtin.iptables tasks writing the same DNAT rules. Run once, as root, from the repository:

    source scripts/env.sh && python bench/nat_portmap_bench.py [--ports 500] [--json]

Everything happens inside a throwaway network namespace (its iptables are private to it), which is
deleted at the end. Prints the wall-clock times, the module's own time and the ratio. No assertions on
durations; the rule counts are checked so both sides really did the work.

What each side writes:
  nat_portmap   N DNAT rules in NETPLUMB-DNAT plus, per port, a hairpin MASQUERADE rule and a FORWARD
                accept rule (3N rules), the jumps, in ONE iptables-restore --noflush; then a re-run that
                changes nothing (one iptables-save).
  loop          one task creating the chain BENCH-DNAT and its PREROUTING jump, then N iptables tasks, one
                DNAT rule each (N module runs, each an iptables -C then -A: one process per rule).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(os.environ.get('NP_VENV', os.path.join(REPO, '.build', 'venv')), 'bin')
TARGET_PYTHON = os.environ.get('NP_TARGET_PYTHON', '/usr/bin/python3')
DEST = '10.250.0.2'
FIRST_PORT = 20000


def sh(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def env():
    e = dict(os.environ)
    e.update({'ANSIBLE_COLLECTIONS_PATH': os.path.join(REPO, '.build', 'collections'), 'ANSIBLE_NOCOLOR': '1',
              'ANSIBLE_PYTHON_INTERPRETER': TARGET_PYTHON, 'ANSIBLE_LOCALHOST_WARNING': 'False',
              'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False', 'ANSIBLE_DEPRECATION_WARNINGS': 'False'})
    return e


def play(ns, tasks, workdir, name):
    """Run the tasks in ``ns``; (wall seconds, the first task's registered result)."""
    path = os.path.join(workdir, name + '.yml')
    out_path = os.path.join(workdir, name + '.json')
    tasks = [dict(tasks[0], register='bench_first')] + tasks[1:] + [
        {'name': 'save', 'ansible.builtin.copy': {'content': '{{ bench_first | to_json }}', 'dest': out_path}}]
    with open(path, 'w') as f:
        json.dump([{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}], f)
    argv = ['ip', 'netns', 'exec', ns, os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,',
            '-c', 'local', path]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=REPO, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit('%s failed:\n%s\n%s' % (name, proc.stdout[-3000:], proc.stderr[-3000:]))
    with open(out_path) as f:
        return seconds, json.load(f)


def count_rules(ns, chain):
    out = sh(['ip', 'netns', 'exec', ns, 'iptables-save', '-t', 'nat']).stdout
    return sum(1 for line in out.splitlines() if line.startswith('-A %s ' % chain))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ports', type=int, default=500)
    parser.add_argument('--json', action='store_true', help='also print one JSON line')
    args = parser.parse_args()
    n = args.ports
    ns = 'np-natbench-' + secrets.token_hex(3)
    workdir = tempfile.mkdtemp(prefix='np-natbench-')
    sh(['ip', 'netns', 'add', ns])
    try:
        sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'])
        # a bridge-like interface toward the destination (a veth pair: this kernel has no dummy module)
        sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'add', 'npbench0', 'type', 'veth', 'peer', 'name', 'npbench1'])
        sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', '10.250.0.1/24', 'dev', 'npbench0'])
        sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'npbench0', 'up'])
        ports = list(range(FIRST_PORT, FIRST_PORT + n))

        publish = ['%d:%d' % (p, p) for p in ports]
        one_task = [{'name': 'publish %d ports' % n, 'netplumb.pipework.nat_portmap': {
            'destination': DEST + '/24', 'publish': publish}}]
        t_module, result = play(ns, one_task, workdir, 'nat_portmap')
        assert result['changed'] and len(result['mappings']) == n, result.get('msg')
        module_elapsed = result['elapsed']
        assert count_rules(ns, 'NETPLUMB-DNAT') == n
        t_rerun, again = play(ns, one_task, workdir, 'nat_portmap_rerun')
        assert again['changed'] is False
        rerun_elapsed = again['elapsed']

        loop = [
            {'name': 'chain', 'ansible.builtin.iptables': {
                'table': 'nat', 'chain': 'BENCH-DNAT', 'chain_management': True}},
            {'name': 'jump', 'ansible.builtin.iptables': {
                'table': 'nat', 'chain': 'PREROUTING', 'jump': 'BENCH-DNAT'}},
            {'name': 'one DNAT rule per port', 'ansible.builtin.iptables': {
                'table': 'nat', 'chain': 'BENCH-DNAT', 'protocol': 'tcp', 'destination_port': '{{ item }}',
                'jump': 'DNAT', 'to_destination': DEST + ':{{ item }}', 'comment': 'bench {{ item }}'},
             'loop': ports},
        ]
        t_loop, unused = play(ns, loop, workdir, 'iptables_loop')
        assert count_rules(ns, 'BENCH-DNAT') == n

        print('nat_portmap benchmark, %d ports, one run each (namespace %s)' % (n, ns))
        print('  (the save task that records results adds one module run to every playbook)')
        print('  one nat_portmap task          %8.2f s wall (module %.2f s), %d DNAT + %d other rules, '
              'one iptables-restore' % (t_module, module_elapsed, n, 2 * n))
        print('  same task again (no change)   %8.2f s wall (module %.2f s)' % (t_rerun, rerun_elapsed))
        print('  loop of ansible.builtin.iptables %5.2f s wall, %d tasks, %d DNAT rules'
              % (t_loop, n + 2, n))
        print('  ratio loop / nat_portmap      %8.1f x' % (t_loop / t_module))
        if args.json:
            print(json.dumps({'ports': n, 'nat_portmap_wall': round(t_module, 3), 'nat_portmap_module': module_elapsed,
                              'rerun_wall': round(t_rerun, 3), 'rerun_module': rerun_elapsed,
                              'iptables_loop_wall': round(t_loop, 3), 'ratio': round(t_loop / t_module, 2)}))
    finally:
        subprocess.run(['ip', 'netns', 'del', ns], check=False)
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
