"""host_bridge_migrate's revert program and warnings, offline: a fake runner stands in for `ip`/`ovs-vsctl`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import executor as applier
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import snapshot
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import revert as rollback

from .test_plan import MAC, original


def record(bridge_type='linux', created=False):
    return {'version': rollback.RECORD_VERSION, 'token': 'feedc0de', 'status': rollback.ARMED,
            'uplink': 'enp0s3', 'bridge': 'br0', 'bridge_type': bridge_type, 'bridge_created': created,
            'database_socket': 'unix:/tmp/db.sock', 'original': original(),
            'tools': {'ip': 'ip', 'ovs_vsctl': 'ovs-vsctl'}, 'lock_path': '/tmp/x.lock'}


class FakeHost:
    """Answers `ip -json` reads with a restored host, records every write."""

    def __init__(self, restored=True, fail=()):
        self.calls = []
        self.restored = restored
        self.fail = fail

    def __call__(self, argv):
        self.calls.append(argv)
        if any(word in argv for word in self.fail):
            return 2, '', 'RTNETLINK answers: Invalid argument'
        if '-json' in argv and 'addr' in argv and argv[-1] == 'enp0s3':
            info = [{'local': '192.168.1.102', 'prefixlen': 24}, {'local': '2001:db8::102', 'prefixlen': 64}]
            link = {'ifname': 'enp0s3', 'addr_info': info if self.restored else []}
            if not self.restored:
                link['master'] = 'br0'
            return 0, json.dumps([link]), ''
        if '-json' in argv and 'link' in argv and 'show' in argv and 'dev' in argv:
            return 0, json.dumps([{'ifname': 'enp0s3', 'mtu': 1500, 'address': MAC, 'flags': ['UP']}]), ''
        if '-json' in argv:
            return 0, '[]', ''
        if 'port-to-br' in argv:
            return 1, '', 'no port named enp0s3'
        if 'list-ports' in argv:
            return 0, '', ''
        return 0, '', ''

    def writes(self):
        return [c for c in self.calls if '-json' not in c and 'port-to-br' not in c and 'list-ports' not in c]


def test_restore_linux_order():
    host = FakeHost()
    ok, problems = rollback.restore(record(), run=host)
    assert ok and problems == []
    writes = [' '.join(c) for c in host.writes()]
    assert writes[0] == 'ip -4 addr add 192.168.1.102/24 dev enp0s3'
    assert writes[1] == 'ip -6 addr add 2001:db8::102/64 nodad dev enp0s3'
    assert writes[2] == 'ip link set dev enp0s3 nomaster'
    assert writes[3].startswith('ip -4 route replace 172.16.5.0/24 dev enp0s3')  # on-link first
    assert sum(1 for w in writes if ' route replace ' in w) == 4
    assert sum(1 for w in writes if ' route del ' in w and ' dev br0 ' in w) == 4
    assert writes[-2:] == ['ip -6 addr del 2001:db8::102/64 dev br0', 'ip -4 addr del 192.168.1.102/24 dev br0']
    assert not any('link set dev enp0s3 mtu' in w for w in writes)  # unchanged MTU/MAC: not touched


def test_restore_ovs_and_created_bridge():
    host = FakeHost()
    ok, problems = rollback.restore(record('ovs', created=True), run=host)
    assert ok and not problems
    writes = [' '.join(c) for c in host.writes()]
    assert 'ovs-vsctl --db=unix:/tmp/db.sock --timeout=20 -- --if-exists del-port br0 enp0s3' in writes
    assert writes[-1] == 'ovs-vsctl --db=unix:/tmp/db.sock --timeout=20 -- --if-exists del-br br0'


def test_restore_keeps_going_and_reports():
    host = FakeHost(restored=False, fail=('nomaster',))
    ok, problems = rollback.restore(record(), run=host)
    assert not ok
    assert any('nomaster' in p for p in problems)
    assert any('address 192.168.1.102/24 is not on enp0s3' in p for p in problems)
    assert any('still a port of br0' in p for p in problems)
    # everything after the failed step was still attempted
    assert any('route' in c and 'replace' in c for c in host.calls)


def test_record_roundtrip(tmp_path):
    path = str(tmp_path / 'netns-1.enp0s3.json')
    rec = record()
    rollback.add_event(rec, 'armed', token='feedc0de')
    rollback.write_record(path, rec)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert rollback.load_record(path) == rec
    with open(path, 'w') as f:
        f.write('{not json')
    assert rollback.load_record(path) is None
    assert rollback.load_record(str(tmp_path / 'missing.json')) is None
    assert rollback.record_path(4026531840, 'eth0', '/run/x') == '/run/x/netns-4026531840.eth0.json'


def test_fire_only_when_still_armed(tmp_path):
    path = str(tmp_path / 'netns-1.enp0s3.json')
    rec = record()
    rec['status'] = rollback.CONFIRMED
    rollback.write_record(path, rec)
    said = []
    assert rollback.fire(path, 'feedc0de', 'test', said.append) == 0
    assert rollback.load_record(path)['status'] == rollback.CONFIRMED
    rec['status'] = rollback.ARMED
    rec['token'] = 'another'
    rollback.write_record(path, rec)
    assert rollback.fire(path, 'feedc0de', 'test', said.append) == 0
    assert rollback.load_record(path)['status'] == rollback.ARMED


def test_is_revert_process_never_matches_a_stranger():
    assert not rollback.is_revert_process(os.getpid(), 'feedc0de')
    assert not rollback.is_revert_process(None, 'feedc0de')
    assert not rollback.cancel_revert(os.getpid(), 'feedc0de')


def test_revert_source_is_standalone(tmp_path):
    """The copied revert program runs with nothing but the standard library."""
    script = tmp_path / 'revert.py'
    script.write_bytes(applier.revert_source())
    proc = subprocess.run([sys.executable, '-I', str(script)], capture_output=True, text=True,
                          env={'PATH': '/usr/bin:/bin'}, check=False)
    assert proc.returncode == 2 and 'usage:' in proc.stderr
    imports = [line for line in applier.revert_source().decode().splitlines() if line.startswith(('import ', 'from '))]
    assert imports and not any('ansible' in line for line in imports)


def test_iptables_warnings():
    save = '\n'.join(['*filter', ':INPUT ACCEPT [0:0]', '-A INPUT -i enp0s3 -p tcp --dport 22 -j ACCEPT',
                      '-A FORWARD -o enp+ -j ACCEPT', '-A FORWARD ! -i br0 -j DROP', 'COMMIT'])
    out = snapshot.iptables_warnings(save, 'iptables', 'enp0s3', 'br0')
    assert len(out) == 1 and '2 rule(s) name enp0s3' in out[0] and '--dport 22' in out[0]
    assert snapshot.iptables_warnings(save, 'iptables', 'eth9', 'br0') == []


def test_nft_warnings():
    ruleset = {'nftables': [
        {'metainfo': {'version': '1.0.6'}},
        {'rule': {'family': 'inet', 'table': 'filter', 'chain': 'input', 'expr': [
            {'match': {'op': '==', 'left': {'meta': {'key': 'iifname'}}, 'right': 'enp0s3'}},
            {'accept': None}]}},
        {'rule': {'family': 'inet', 'table': 'filter', 'chain': 'input', 'expr': [
            {'match': {'op': '==', 'left': {'meta': {'key': 'oifname'}}, 'right': {'set': ['eth1', 'enp0s3']}}},
            {'accept': None}]}},
        {'rule': {'family': 'inet', 'table': 'filter', 'chain': 'input', 'expr': [
            {'match': {'op': '==', 'left': {'meta': {'key': 'iifname'}}, 'right': 'lo'}}]}},
    ]}
    out = snapshot.nft_warnings(ruleset, 'enp0s3', 'br0')
    assert len(out) == 1 and '2 rule(s)' in out[0]


def test_dynamic_warnings():
    view = {'uplink': {'name': 'enp0s3'}, 'bridge_name': 'br0',
            'uplink_addresses': [dict(original()['addresses'][0], valid_lft=3600)],
            'uplink_routes': [dict(original()['routes'][0], proto=16)]}
    out = snapshot.dynamic_warnings(view)
    assert len(out) == 2
    assert 'DHCP or SLAAC client' in out[0] and '3600 s left' in out[0]
    assert 'proto dhcp' in out[1]
