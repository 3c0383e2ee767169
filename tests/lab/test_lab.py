"""Real tests of lab/lab.py: build labs of namespaces, reach them over SSH with Ansible, tear them down.

Needs root, iproute2, util-linux (unshare/nsenter), openssh-server/-client and Open vSwitch binaries
(the root OVS need not run). Every lab name carries this process's PID, so parallel runs do not collide.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_PY = REPO / 'lab' / 'lab.py'


def _load_lab_module():
    # Loaded by path: a plain "import lab" could pick up tests/lab as a namespace package.
    spec = importlib.util.spec_from_file_location('netplumb_lab', LAB_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


labmod = _load_lab_module()
Lab, LabConfig, LabError = labmod.Lab, labmod.LabConfig, labmod.LabError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='the lab needs root (namespaces, mounts)')
TAG = f'{os.getpid() % 100000}'


def _ansible_bin() -> str:
    near = Path(sys.executable).parent / 'ansible'  # the venv's ansible when pytest runs from the venv
    return str(near) if near.exists() else (shutil.which('ansible') or 'ansible')


def ansible(lab, *args, timeout=120) -> dict:
    """Run an ad-hoc ansible command against the lab's inventory; return {host: result}."""
    tree = lab.state_dir / f'tree-{time.monotonic_ns()}'  # --tree: one JSON result file per host
    env = dict(os.environ, ANSIBLE_DEPRECATION_WARNINGS='0')
    proc = subprocess.run([_ansible_bin(), '-i', str(lab.inventory_path), 'all', '--tree', str(tree), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {p.name: json.loads(p.read_text()) for p in tree.iterdir()}
    shutil.rmtree(tree)
    return results


def root_links() -> set:
    out = subprocess.run(['ip', '-j', 'link'], capture_output=True, text=True, check=True).stdout
    return {link['ifname'] for link in json.loads(out)}


def netns_names() -> set:
    out = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def live_pids_in(inodes: set) -> list:
    return [p for p in labmod._pids_in_netns(inodes) if labmod._proc_start(p) is not None]


def pids_mentioning(text: str) -> list:
    found = []
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            cmdline = Path(f'/proc/{entry}/cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if text in cmdline and int(entry) != os.getpid() and labmod._proc_start(int(entry)) is not None:
            found.append(int(entry))
    return found


def root_ovs_bridges() -> set | None:
    proc = subprocess.run(['ovs-vsctl', '--timeout=3', 'list-br'], capture_output=True, text=True, check=False)
    return set(proc.stdout.split()) if proc.returncode == 0 else None


@pytest.fixture(scope='module', params=['eth0', 'enp0s3'])
def lab(request):
    """A two-host lab (scenario S3 addresses) whose uplink inside the hosts is named by the param."""
    before = {'links': root_links()}
    instance = Lab(f't{TAG}{request.param[:3]}', hosts=2, uplink=request.param)
    t0 = time.monotonic()
    instance.up()
    instance.test_up_seconds = time.monotonic() - t0
    instance.test_before = before
    yield instance
    instance.down()  # no-op when test_down_leaves_nothing already ran


def test_up_is_idempotent(lab):
    # Durations are printed, never asserted (a loaded CI machine is not a benchmark).
    pids = [h.pid for h in lab.hosts]
    t0 = time.monotonic()
    again = Lab(lab.name, hosts=2, uplink=lab.config.uplink).up()
    print('\nlab: 2 hosts up in %.1f s, up again in %.2f s' % (lab.test_up_seconds, time.monotonic() - t0))
    assert [h.pid for h in again.hosts] == pids  # nothing rebuilt
    assert lab.status()['phase'] == 'up'
    assert [h.address for h in lab.hosts] == ['10.10.101.105', '10.10.101.106']


def test_ansible_ping_over_ssh(lab):
    results = ansible(lab, '-m', 'ping')
    assert {h: r.get('ping') for h, r in results.items()} == {'host1': 'pong', 'host2': 'pong'}
    # ControlPersist masters live in the lab's state dir (down() closes them)
    assert any(p.is_socket() for p in lab.control_dir.iterdir())


def test_hostnames_differ(lab):
    results = ansible(lab, '-m', 'command', '-a', 'hostname')
    assert {h: r['stdout'] for h, r in results.items()} == {'host1': 'host1', 'host2': 'host2'}
    assert lab.exec('host2', ['hostname']).stdout.strip() == 'host2'
    assert subprocess.run(['hostname'], capture_output=True, text=True, check=True).stdout.strip() not in ('host1', 'host2')


def test_fact_gathering_does_not_stall(lab):
    # Without the bound /etc/hosts and resolv.conf, fact gathering waits on DNS for minutes: the timeout
    # fails the test then (a hang guard, not a duration assertion).
    t0 = time.monotonic()
    results = ansible(lab, '-m', 'setup', '-a', 'gather_subset=min', timeout=90)
    print('\nlab: facts of 2 hosts in %.1f s' % (time.monotonic() - t0))
    assert results['host1']['ansible_facts']['ansible_hostname'] == 'host1'


def test_uplink_address_and_default_route(lab):
    for host in lab.hosts:
        addrs = json.loads(lab.exec(host.name, ['ip', '-j', 'addr', 'show', 'dev', lab.config.uplink]).stdout)
        assert f'{host.address}/24' in {f"{a['local']}/{a['prefixlen']}" for a in addrs[0]['addr_info']}
        routes = json.loads(lab.exec(host.name, ['ip', '-j', 'route', 'show', 'default']).stdout)
        assert routes[0]['gateway'] == '10.10.101.254' and routes[0]['dev'] == lab.config.uplink
        arp_ignore = lab.exec(host.name, ['cat', '/proc/sys/net/ipv4/conf/all/arp_ignore']).stdout.strip()
        assert arp_ignore == '1'


def test_mounts_are_private(lab):
    host = lab.hosts[0]
    state = str(lab.state_dir)
    assert state not in Path('/proc/self/mountinfo').read_text()
    assert state not in Path('/proc/1/mountinfo').read_text()
    # The hosts' OVS daemons write their sockets into their own bound /run/openvswitch, never the root's
    # (which other tests may change meanwhile, so look for the lab daemons' files, not for equality).
    lab_pids = {str(r['pid']) for r in lab._read_state()['pids'].values()}
    assert not {f for f in os.listdir('/run/openvswitch') if f.split('.')[1:2] and f.split('.')[1] in lab_pids}
    inside_run = lab.exec(host.name, ['ls', '/run/openvswitch']).stdout.split()
    assert 'db.sock' in inside_run and any(f.split('.')[1] in lab_pids for f in inside_run if f.endswith('.ctl'))
    inside = lab.exec(host.name, ['cat', '/proc/self/mountinfo']).stdout
    for target in ('/run/openvswitch', '/etc/openvswitch', '/var/log/openvswitch', '/etc/hosts', '/etc/resolv.conf'):
        assert f' {target} ' in inside, target
    # the root dockerd's socket and every PID stay visible
    assert lab.exec(host.name, ['test', '-S', '/var/run/docker.sock'], check=False).returncode == 0
    assert lab.exec(host.name, ['test', '-d', f'/proc/{os.getpid()}'], check=False).returncode == 0
    assert 'host2' in lab.exec(host.name, ['cat', '/etc/hosts']).stdout


def test_each_host_has_its_own_ovs(lab):
    bridge = f'npl{TAG}'[:15]
    lab.exec('host1', ['ovs-vsctl', 'add-br', bridge, '--', 'set', 'bridge', bridge, 'datapath_type=netdev'])
    try:
        assert bridge in lab.exec('host1', ['ovs-vsctl', 'list-br']).stdout.split()
        assert bridge not in lab.exec('host2', ['ovs-vsctl', 'list-br']).stdout.split()
        root = root_ovs_bridges()
        assert root is None or bridge not in root
        for host in lab.hosts:
            tso = lab.exec(host.name, ['ovs-vsctl', 'get', 'Open_vSwitch', '.', 'other_config:userspace-tso-enable'])
            assert tso.stdout.strip() == '"true"'
    finally:
        lab.exec('host1', ['ovs-vsctl', '--if-exists', 'del-br', bridge])


def test_ping_hosts_gateway_and_client(lab):
    h1, h2 = lab.hosts
    for src, dst in ((h1.name, h2.address), (h2.name, h1.address), (h1.name, lab.gateway),
                     (h2.name, lab.gateway), ('client', h1.address), ('client', h2.address)):
        proc = lab.exec(src, ['ping', '-c', '1', '-W', '2', dst], check=False)
        assert proc.returncode == 0, f'{src} -> {dst}: {proc.stdout}{proc.stderr}'


SERVER = '''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5555)); s.listen(1); s.settimeout(10)
c, _ = s.accept(); data = b''
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
c.sendall(b'%d' % len(data)); c.close()
'''
CLIENT = '''
import socket, sys, time
deadline = time.time() + 10
while True:
    try:
        s = socket.create_connection((sys.argv[1], 5555), timeout=5); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.05)
s.sendall(b'x' * 1000000); s.shutdown(socket.SHUT_WR); print(s.recv(100).decode())
'''


def test_tcp_between_hosts(lab):
    h1, h2 = lab.hosts
    server = subprocess.Popen(lab.exec_argv(h2.name, ['python3', '-c', SERVER, h2.address]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reply = lab.exec(h1.name, ['python3', '-c', CLIENT, h2.address], timeout=30).stdout.strip()
        assert reply == '1000000'
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_ssh_config_for_people(lab):
    proc = subprocess.run(lab.ssh_argv('host2', ['cat', '/proc/sys/kernel/hostname']), capture_output=True,
                          text=True, timeout=30, check=True)
    assert proc.stdout.strip() == 'host2'


def test_down_leaves_nothing(lab):
    inodes = set(lab._read_state()['namespaces'].values())
    pids = [r['pid'] for r in lab._read_state()['pids'].values()]
    masters = pids_mentioning(str(lab.control_dir))  # ssh ControlPersist masters ("ssh: <path> [mux]")
    assert masters, 'the Ansible tests above should have left ControlPersist masters'
    lab.down()
    assert not netns_names() & {lab.switch_ns, lab.client_ns, *(h.netns for h in lab.hosts)}
    assert not live_pids_in(inodes)
    assert all(labmod._proc_start(p) is None for p in pids + masters)
    assert not lab.state_dir.exists() and not Path(f'{lab.state_dir}.lock').exists()
    # No lab interface ever lived in the root namespace, nor does one now (others' tests may add theirs).
    ours = {lab.config.uplink, 'lan', labmod.BRIDGE, *(f'h{h.index}' for h in lab.hosts)}
    assert not (root_links() - lab.test_before['links']) & ours
    lab.down()  # idempotent: nothing left to do, no error


# ---------------------------------------------------------------------------- beyond the 2-host lab

def test_eight_hosts_named_and_addressed():
    names = [f'n{i}' for i in range(1, 9)]
    lab = Lab(f't{TAG}8', names=names, subnet='192.168.1.0/24', gateway='192.168.1.1', uplink='enp0s3')
    try:
        lab.up()
        assert [h.address for h in lab.hosts] == [f'192.168.1.{105 + i}' for i in range(8)]
        results = ansible(lab, '-m', 'command', '-a', 'hostname')
        assert {h: r['stdout'] for h, r in results.items()} == {n: n for n in names}
        assert lab.exec('n8', ['ping', '-c', '1', '-W', '2', '192.168.1.105']).returncode == 0
    finally:
        lab.down()
    assert not netns_names() & {lab.switch_ns, *(h.netns for h in lab.hosts)}


def _cli(*args, check=True):
    return subprocess.run([sys.executable, str(LAB_PY), *args], capture_output=True, text=True, timeout=120,
                          check=check)


def test_cli_and_down_after_a_crash():
    name = f't{TAG}cli'
    out = _cli('up', '--name', name, '--hosts', '1', '--names', 'hostA', '--uplink', 'enp0s3',
               '--addresses', '10.10.101.105').stdout
    assert 'hostA' in out
    status = json.loads(_cli('status', '--name', name, '--json').stdout)
    assert status['phase'] == 'up' and status['hosts'][0]['sshd_listening']
    assert _cli('exec', 'hostA', '--name', name, '--', 'hostname').stdout.strip() == 'hostA'
    assert _cli('exec', '--name', name, 'client', '--', 'ping', '-c1', '-W2', '10.10.101.105').returncode == 0
    inventory = Path(_cli('inventory', '--name', name).stdout.strip())
    assert inventory.is_file()
    # Crash: the keeper dies hard and the state file is lost; down must still find and remove the rest.
    state_dir = inventory.parent
    inodes = set(json.loads((state_dir / 'state.json').read_text())['namespaces'].values())
    os.kill(status['hosts'][0]['pid'], 9)
    (state_dir / 'state.json').unlink()
    _cli('down', '--name', name)
    assert not {ns for ns in netns_names() if ns.startswith(f'np-{name}-')}
    assert not live_pids_in(inodes)
    assert not state_dir.exists()
    assert _cli('status', '--name', name, check=False).returncode == 1


def test_failed_up_rolls_back(monkeypatch):
    lab = Lab(f't{TAG}rb', hosts=2)

    def broken(host):
        raise LabError(f'injected failure on {host.name}')

    monkeypatch.setattr(lab, '_start_ovs', broken)
    with pytest.raises(LabError, match='injected'):
        lab.up()
    assert not {ns for ns in netns_names() if ns.startswith(f'np-{lab.name}-')}
    assert not lab.state_dir.exists()


@pytest.mark.parametrize('options, message', [
    ({'uplink': 'a-name-longer-than-15'}, 'uplink'),
    ({'uplink': 'lo'}, 'uplink'),
    ({'names': ['a', 'a']}, 'duplicates'),
    ({'names': ['switch']}, 'reserved'),
    ({'hosts': 0}, 'hosts'),
    ({'hosts': 40}, 'hosts'),
    ({'addresses': ['10.9.9.9', '10.10.101.5']}, 'addresses'),
    ({'gateway': '10.10.101.105'}, 'must differ'),
    ({'subnet': '10.10.101.0/30'}, 'too small'),
    ({'name': 'bad name'}, 'name'),
])
def test_config_validation(options, message):
    with pytest.raises(LabError, match=message):
        LabConfig(**options).resolved()


def test_config_defaults_follow_s3():
    cfg = LabConfig(hosts=3).resolved()
    assert cfg.addresses == ['10.10.101.105', '10.10.101.106', '10.10.101.107']
    assert (cfg.gateway, cfg.client, cfg.names) == ('10.10.101.254', '10.10.101.200', ['host1', 'host2', 'host3'])


def test_example_configs_and_yaml(tmp_path):
    s1 = LabConfig.from_file(str(REPO / 'lab' / 'examples' / 's1.json')).resolved()
    assert (s1.names, s1.addresses, s1.gateway, s1.uplink) == (['hostA'], ['192.168.1.102'], '192.168.1.1', 'enp0s3')
    s3 = LabConfig.from_file(str(REPO / 'lab' / 'examples' / 's3.json')).resolved()
    assert (s3.names, s3.addresses, s3.gateway) == (['hostA', 'hostB'], ['10.10.101.105', '10.10.101.106'], '10.10.101.254')
    pytest.importorskip('yaml')
    conf = tmp_path / 'lab.yml'
    conf.write_text('name: y\nhosts: 3\nuplink: enp0s3\n')
    assert LabConfig.from_file(str(conf)).resolved().names == ['host1', 'host2', 'host3']
    conf.write_text('hosts: 3\nbogus: 1\n')
    with pytest.raises(LabError, match='bogus'):
        LabConfig.from_file(str(conf))
