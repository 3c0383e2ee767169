# Copyright: netplumb.pipework developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a Molecule scenario left behind after `molecule destroy` (or a `molecule test` that failed).

    python3 tests/molecule/leftovers.py snapshot > /tmp/before.json      # before the run
    molecule test -s ovs_vlan
    python3 tests/molecule/leftovers.py check ovs_vlan --before /tmp/before.json

Looks for: the lab's namespaces (np-m<hash>-SCENARIO-*), processes that name the lab (sshd, OVS daemons,
ssh masters, relays), armed reverts of host_bridge_migrate left in a namespace that is gone, its state
directory, the scenario's containers (label netplumb.molecule), its
bridge-migration records (reported, not counted: once a namespace is gone its records cannot be
told from another test's), and, compared with the snapshot, new veths in the root namespace and new
bridges of the root Open vSwitch (the lab never makes either: they would come from a module run
against the wrong host). Exit status 1 when anything is left. Read-only; run as root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDS = Path('/run/netplumb-pipework/bridge_migrate')


def _run(argv):
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else ''


def root_state():
    veths = [link['ifname'] for link in json.loads(_run(['ip', '-j', 'link', 'show', 'type', 'veth']) or '[]')]
    bridges = _run(['ovs-vsctl', '--timeout=5', 'list-br']).split()
    return {'veths': sorted(veths), 'ovs_bridges': sorted(bridges)}


def processes_naming(needles):
    found = []
    for proc in Path('/proc').iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / 'cmdline').read_bytes().split(b'\0')
        except OSError:
            continue
        line = ' '.join(part.decode(errors='replace') for part in argv if part)
        if line and any(needle in line for needle in needles):
            found.append(f'{proc.name} {line}')
    return found


def _netns_inode(pid):
    try:
        return os.stat(f'/proc/{pid}/ns/net').st_ino
    except OSError:
        return None


def orphan_reverts():
    """host_bridge_migrate revert processes whose network namespace no longer has a name (a lab that is
    gone) - they would never find their namespace again."""
    named = {os.stat(f'/run/netns/{ns}').st_ino for ns in _run(['ip', 'netns', 'list']).split()
             if re.match(r'^[\w.-]+$', ns) and os.path.exists(f'/run/netns/{ns}')}
    named.add(_netns_inode(1))
    return [line for line in processes_naming(['bridge_migrate/revert.py'])
            if _netns_inode(line.split()[0]) not in named]


def lab_name(scenario):
    """As np_lab_name in extensions/molecule/config.yml: m<5 hex digits of the checkout's path>-<scenario>."""
    return f"m{hashlib.sha1(str(REPO).encode('utf-8')).hexdigest()[:5]}-{scenario}"


def check(scenario, before):
    lab, state = lab_name(scenario), REPO / 'lab-state' / f'mol-{scenario}'
    left = {}
    namespaces = [line.split()[0] for line in _run(['ip', 'netns', 'list']).splitlines()
                  if line.startswith(f'np-{lab}-')]
    left['namespaces'] = namespaces
    left['processes'] = processes_naming([f'np-{lab}-', f'{state}/', f'{state} '])
    left['orphan_reverts'] = orphan_reverts()
    left['state_dir'] = [str(p) for p in (state, Path(f'{state}.lock')) if p.exists()]
    left['containers'] = _run(['docker', 'ps', '--all', '--format', '{{.Names}}',
                               '--filter', f'label=netplumb.molecule={lab}']).split()
    left['containers'] += [name for name in _run(['docker', 'ps', '--all', '--format', '{{.Names}}']).split()
                           if name.startswith(f'{lab}-') and name not in left['containers']]
    # records of namespaces that no longer exist are the lab's (or another finished test's)
    live = {str(os.stat(f'/run/netns/{ns}').st_ino) for ns in _run(['ip', 'netns', 'list']).split()
            if re.match(r'^[\w.-]+$', ns) and os.path.exists(f'/run/netns/{ns}')}
    notes = sorted(
        str(p) for p in (RECORDS.glob('netns-*') if RECORDS.is_dir() else [])
        if p.name.split('.')[0][len('netns-'):] not in live)
    if before is not None:
        now = root_state()
        left['new_root_veths'] = sorted(set(now['veths']) - set(before['veths']))
        left['new_root_ovs_bridges'] = sorted(set(now['ovs_bridges']) - set(before['ovs_bridges']))
    return {key: value for key, value in left.items() if value}, notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    sub = parser.add_subparsers(dest='cmd', required=True)
    sub.add_parser('snapshot', help='print the root namespace veths and root OVS bridges as JSON')
    chk = sub.add_parser('check', help='list what the scenario left behind')
    chk.add_argument('scenario')
    chk.add_argument('--before', help='a snapshot taken before the run')
    args = parser.parse_args(argv)
    if args.cmd == 'snapshot':
        print(json.dumps(root_state()))
        return 0
    before = json.loads(Path(args.before).read_text()) if args.before else None
    left, notes = check(args.scenario, before)
    print(json.dumps(left, indent=2) if left else f'{args.scenario}: nothing left behind')
    if notes:  # not counted: after the namespace is gone nothing tells whose test left them
        print('note: bridge-migration records of namespaces that no longer exist: ' + ' '.join(notes))
    return 1 if left else 0


if __name__ == '__main__':
    sys.exit(main())
