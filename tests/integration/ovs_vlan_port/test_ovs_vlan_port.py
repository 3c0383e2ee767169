"""ovs_vlan_port against the real root Open vSwitch, through ansible-playbook.

Everything is throwaway and removed by the ``lab`` fixture's finalizer: bridges named ovsnp<hex>
(netdev datapath, the only one that passes traffic here), veths named npv<hex> in the root namespace,
namespaces named np<hex>. A "port carrying the host's own addresses" is the internal port of such a
bridge with a 198.51.100.x/32 address (removed with the bridge). OVS state is checked with
``ovs-vsctl --format=json``; traffic with ping and a TCP exchange (python3) between two namespaces.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
TARGET_PYTHON = os.environ.get('NP_TARGET_PYTHON', '/usr/bin/python3')
MODULE = 'netplumb.pipework.ovs_vlan_port'
OWNER = {'netplumb_owner': 'netplumb.pipework'}
SUBNET = '10.253.61.'  # inside throwaway namespaces only; the root namespace holds no such address


def sh(argv, check=True, **kw):
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=kw.pop('timeout', 60), **kw)
    if check and proc.returncode != 0:
        raise AssertionError('%s failed (%d): %s%s' % (argv, proc.returncode, proc.stdout, proc.stderr))
    return proc


def hexname(prefix):
    return prefix + secrets.token_hex(3)


def ansible_playbook():
    found = shutil.which('ansible-playbook')
    return found or os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')


def run_tasks(tasks, path_prefix=None):
    """Run the module once per task in ONE playbook (saves Ansible's start-up on a busy host); each task is
    {'args': {...}, 'check': bool, 'diff': bool}. Returns the registered results, failures included."""
    with tempfile.TemporaryDirectory(prefix='np-ovp-') as tmp:
        out = os.path.join(tmp, 'result.json')
        steps = []
        for i, task in enumerate(tasks):
            steps.append({'name': 'module under test %d' % i, MODULE: task['args'], 'register': 'np_result_%d' % i,
                          'ignore_errors': True, 'check_mode': bool(task.get('check')), 'diff': bool(task.get('diff'))})
        steps.append({'name': 'save the results', 'check_mode': False, 'diff': False, 'ansible.builtin.copy': {
            'content': '{{ [%s] | to_json }}' % ', '.join('np_result_%d' % i for i in range(len(tasks))), 'dest': out}})
        playbook = os.path.join(tmp, 'play.yml')
        with open(playbook, 'w') as f:
            json.dump([{'hosts': 'localhost', 'gather_facts': False, 'tasks': steps}], f)
        argv = [ansible_playbook(), '-i', 'localhost,', '-c', 'local',
                '-e', 'ansible_python_interpreter=%s' % TARGET_PYTHON, playbook]
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR='1',
                   ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False')
        if path_prefix:
            env['PATH'] = path_prefix + os.pathsep + env['PATH']
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert proc.returncode == 0 and os.path.exists(out), proc.stdout + proc.stderr
        with open(out) as f:
            return json.load(f)


def run_module(args, check=False, diff=False, path_prefix=None):
    return run_tasks([{'args': args, 'check': check, 'diff': diff}], path_prefix=path_prefix)[0]


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def failed(result, *words):
    assert result.get('failed'), result
    for w in words:
        assert w in result['msg'], result['msg']
    return result


# ---- reading OVS independently of the collection ----------------------------------------------

def _atom(value):
    """--format=json cells: ["set", []] is unset, ["set", [..]] a list, ["map", [[k, v]..]] a dict."""
    if isinstance(value, list) and len(value) == 2 and value[0] == 'set':
        return value[1]
    if isinstance(value, list) and len(value) == 2 and value[0] == 'map':
        return dict(value[1])
    return value


def ovs_port(name):
    """The port's VLAN columns as ovs-vsctl reports them, or None."""
    out = sh(['ovs-vsctl', '--format=json', '--columns=tag,trunks,vlan_mode,external_ids', 'find', 'Port',
              'name=%s' % name]).stdout
    rows = json.loads(out)['data']
    if not rows:
        return None
    tag, trunks, mode, ids = (_atom(c) for c in rows[0])
    trunks = trunks if isinstance(trunks, list) else [trunks]
    return {'tag': tag if tag != [] else None, 'trunks': sorted(trunks), 'vlan_mode': mode if mode != [] else None,
            'external_ids': ids}


def bridge_of(port):
    proc = sh(['ovs-vsctl', 'port-to-br', port], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def bridge_exists(name):
    return sh(['ovs-vsctl', 'br-exists', name], check=False).returncode == 0


def snapshot(lab):
    """What this test owns in OVS: its bridges and its ports' columns."""
    return ({b: bridge_exists(b) for b in lab.bridges},
            {p: (bridge_of(p), ovs_port(p)) for p in lab.links})


# ---- the throwaway lab ------------------------------------------------------------------------

class Lab:
    def __init__(self):
        self.bridges = []
        self.links = []
        self.namespaces = []
        self.procs = []

    def bridge(self, create=True):
        name = hexname('ovsnp')
        self.bridges.append(name)
        if create:
            sh(['ovs-vsctl', '--timeout=30', 'add-br', name, '--', 'set', 'Bridge', name, 'datapath_type=netdev'])
            sh(['ip', 'link', 'set', name, 'up'])
        return name

    def veth(self):
        """A veth pair npvXXXXXX <-> npvXXXXXXp in the root namespace, both up."""
        name = hexname('npv')
        self.links.append(name)
        sh(['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', name + 'p'])
        sh(['ip', 'link', 'set', name, 'up'])
        sh(['ip', 'link', 'set', name + 'p', 'up'])
        return name

    def host_in_netns(self, address):
        """A namespace npXXXXXX whose eth0 has ``address``; returns (namespace, root-side veth name)."""
        ns = hexname('np')
        self.namespaces.append(ns)
        sh(['ip', 'netns', 'add', ns])
        name = hexname('npv')
        self.links.append(name)
        sh(['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
        sh(['ip', 'link', 'set', name, 'up'])
        sh(['ip', '-n', ns, 'addr', 'add', address, 'dev', 'eth0'])
        sh(['ip', '-n', ns, 'link', 'set', 'eth0', 'up'])
        sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
        return ns, name

    def host_address(self, bridge):
        """Give the bridge's internal port an address of 'the host' (a /32 of TEST-NET-2, no route)."""
        address = '198.51.100.%d/32' % (2 + secrets.randbelow(250))
        sh(['ip', 'addr', 'add', address, 'dev', bridge])
        return address

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for b in self.bridges:
            sh(['ovs-vsctl', '--if-exists', 'del-br', b], check=False)
        for name in self.links:
            sh(['ip', 'link', 'del', name], check=False)
        for ns in self.namespaces:
            sh(['ip', 'netns', 'del', ns], check=False)


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.cleanup()


def add_ports(bridge, *names):
    cmd = ['ovs-vsctl', '--timeout=30']
    for n in names:
        cmd += ['--', 'add-port', bridge, n]
    sh(cmd)


# ---- traffic ----------------------------------------------------------------------------------

SERVER = ('import socket, sys\n'
          's = socket.socket()\n'
          's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n'
          's.bind(("0.0.0.0", int(sys.argv[1])))\n'
          's.listen(1)\n'
          's.settimeout(15)\n'
          'print("listening", flush=True)\n'
          'c, _ = s.accept()\n'
          'c.settimeout(5)\n'
          'c.sendall(b"echo:" + c.recv(100))\n'
          'c.close()\n')
CLIENT = ('import socket, sys\n'
          'c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n'
          'c.sendall(sys.argv[3].encode())\n'
          'print(c.recv(100).decode())\n')


def can_ping(ns, ip):
    return sh(['ip', 'netns', 'exec', ns, 'ping', '-c', '3', '-i', '0.2', '-W', '1', ip], check=False).returncode == 0


def can_tcp(lab, src_ns, dst_ns, dst_ip):
    port = 20000 + secrets.randbelow(20000)
    token = secrets.token_hex(4)
    server = subprocess.Popen(['ip', 'netns', 'exec', dst_ns, TARGET_PYTHON, '-c', SERVER, str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lab.procs.append(server)
    try:
        assert server.stdout.readline().strip() == 'listening'
        got = sh(['ip', 'netns', 'exec', src_ns, TARGET_PYTHON, '-c', CLIENT, dst_ip, str(port), token],
                 check=False, timeout=20)
        return got.stdout.strip() == 'echo:' + token
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)


# ---- tests ------------------------------------------------------------------------------------

def test_tag_check_mode_diff_and_idempotence(lab):
    br = lab.bridge()
    port = lab.veth()
    add_ports(br, port)
    args = {'bridge': br, 'port': port, 'tag': 100, 'external_ids': {'role': 'lab port'}}

    r = ok(run_module(args, check=True, diff=True))
    assert r['changed'] is True
    assert r['ports'][0]['action'] == 'updated' and r['ports'][0]['tag'] == 100
    assert r['diff']['before']['ports'][port]['tag'] is None
    assert r['diff']['after']['ports'][port]['tag'] == 100
    assert ovs_port(port) == {'tag': None, 'trunks': [], 'vlan_mode': None, 'external_ids': {}}, 'check mode changed OVS'

    first, again = run_tasks([{'args': args, 'diff': True}, {'args': args}])
    r = ok(first)
    assert r['changed'] is True
    assert r['diff']['after']['ports'][port]['external_ids'] == {'role': 'lab port'}
    assert r['ports'][0] == {'name': port, 'bridge': br, 'state': 'present', 'tag': 100, 'trunks': [],
                             'vlan_mode': None, 'external_ids': {'role': 'lab port'}, 'changed': True,
                             'action': 'updated', 'changes': ['set tag of %s to 100' % port,
                                                              "set external_ids:role of %s to 'lab port'" % port]}
    assert ovs_port(port) == {'tag': 100, 'trunks': [], 'vlan_mode': None, 'external_ids': {'role': 'lab port'}}
    r = ok(again)
    assert r['changed'] is False and r['ports'][0]['action'] == 'none' and r['commands'] == []


def test_unset_is_unmanaged_listed_keys_only_and_clearing(lab):
    br = lab.bridge()
    port = lab.veth()
    add_ports(br, port)
    sh(['ovs-vsctl', 'set', 'Port', port, 'vlan_mode=native-untagged', 'tag=7', 'trunks=10,20',
        'external_ids:keep=mine', 'external_ids:drop=x'])

    r = ok(run_module({'port': port, 'external_ids': {'new': 'v', 'drop': None}}))  # no bridge needed
    assert r['changed'] is True
    assert ovs_port(port) == {'tag': 7, 'trunks': [10, 20], 'vlan_mode': 'native-untagged',
                              'external_ids': {'keep': 'mine', 'new': 'v'}}

    clear = {'port': port, 'tag': 0, 'trunks': [], 'vlan_mode': 'trunk'}
    trunks, cleared, again = run_tasks([{'args': {'port': port, 'trunks': [30, 10]}}, {'args': clear}, {'args': clear}])
    assert ok(trunks)['ports'][0]['trunks'] == [10, 30] and trunks['ports'][0]['tag'] == 7
    assert ok(cleared)['ports'][0]['tag'] is None and cleared['ports'][0]['trunks'] == []
    assert ok(again)['changed'] is False
    assert ovs_port(port) == {'tag': None, 'trunks': [], 'vlan_mode': 'trunk',
                              'external_ids': {'keep': 'mine', 'new': 'v'}}


def test_create_bridge_and_port_check_mode_creates_nothing_then_absent(lab):
    br = lab.bridge(create=False)
    port = lab.veth()
    args = {'bridge': br, 'datapath_type': 'netdev', 'port': port, 'tag': 10}

    r = ok(run_module(args, check=True))
    assert r['changed'] is True and r['bridges'][br]['created'] is True
    assert not bridge_exists(br) and ovs_port(port) is None, 'check mode created something'

    created, again = run_tasks([{'args': args}, {'args': args}])
    assert ok(created)['changed'] is True and created['ports'][0]['action'] == 'created'
    assert ok(again)['changed'] is False
    assert bridge_exists(br) and bridge_of(port) == br
    assert sh(['ovs-vsctl', 'get', 'Bridge', br, 'datapath_type']).stdout.strip() == 'netdev'
    assert ovs_port(port) == {'tag': 10, 'trunks': [], 'vlan_mode': None, 'external_ids': OWNER}
    assert sh(['ovs-vsctl', 'get', 'Interface', port, 'ofport']).stdout.strip() not in ('-1', '[]')

    absent = {'bridge': br, 'port': port, 'state': 'absent'}
    local, removed, again = run_tasks([{'args': {'bridge': br, 'port': br, 'state': 'absent'}},
                                       {'args': absent}, {'args': absent}])
    failed(local, "'%s' is the local port of bridge" % br)
    assert ok(removed)['changed'] is True and removed['ports'][0]['action'] == 'removed'
    assert ok(again)['changed'] is False
    assert ovs_port(port) is None and bridge_exists(br), 'absent must remove the port, never the bridge'


def test_a_typo_never_creates_a_bridge(lab):
    port = lab.veth()
    typo = hexname('npx')  # neither an "ovs" name nor a datapath_type: must not be created
    lab.bridges.append(typo)
    failed(run_module({'bridge': typo, 'port': port, 'tag': 5}), 'bridge', typo, 'does not exist')
    assert not bridge_exists(typo) and ovs_port(port) is None


BAD_ITEMS = [  # (bad values in ports[1], words the message must contain)
    ({'tag': 5000}, ['ports[1].tag', '5000']),
    ({'trunks': [0, 10]}, ['ports[1].trunks', 'VLAN 0']),
    ({'trunks': [4095]}, ['ports[1].trunks', '4095']),
    ({'vlan_mode': 'hybrid'}, ['vlan_mode', 'hybrid']),  # Ansible's own choices check
    ({'port': 'npv-name-too-long0'}, ['ports[1].port', 'npv-name-too-long0', '15']),
    ({'port': 'npv/x'}, ['ports[1].port', 'npv/x']),
    ({'port': '--help'}, ['ports[1].port', '--help']),
    ({'datapath_type': '--netdev'}, ['ports[1].datapath_type', '--netdev']),
    ({'external_ids': {'a': ['list']}}, ['ports[1].external_ids', "'a'"]),
    ({'vlan_mode': 'access', 'trunks': [5]}, ['ports[1].trunks', '[5]', 'access']),
]


def test_bad_input_fails_early_and_changes_nothing(lab):
    br = lab.bridge()
    port = lab.veth()
    add_ports(br, port)
    fresh = lab.veth()  # the first item would add it
    before = snapshot(lab)
    tasks = [{'args': {'bridge': br, 'ports': [{'port': fresh, 'tag': 41}, dict({'port': port, 'tag': 42}, **bad)]}}
             for bad, _words in BAD_ITEMS]
    tasks.append({'args': {'bridge': br, 'port': port, 'tag': 42, 'database_socket': '--db=unix:/x'}})
    tasks.append({'args': {'bridge': br, 'port': port, 'tag': 42, 'timeout': 0}})
    results = run_tasks(tasks)
    for result, (_bad, words) in zip(results, BAD_ITEMS + [(None, ['database_socket', '--db=unix:/x']),
                                                           (None, ['timeout', '0'])]):
        failed(result, *words)
    assert snapshot(lab) == before, 'a refused run changed OVS'


def test_lockout_refused_without_force_and_allowed_with_it(lab):
    br = lab.bridge()
    uplink = lab.veth()
    other = lab.veth()
    add_ports(br, uplink, other)
    address = lab.host_address(br)
    before = snapshot(lab), ovs_port(br)

    host_port, uplink_trunk, uplink_gone = run_tasks([
        {'args': {'port': br, 'tag': 10}},
        {'args': {'bridge': br, 'ports': [{'port': other, 'tag': 20},
                                          {'port': uplink, 'vlan_mode': 'trunk', 'trunks': [10, 20]}]}},
        {'args': {'port': uplink, 'state': 'absent'}},
    ])
    failed(host_port, 'refusing to set tag of %s to 10' % br, "carries the host's own addresses (%s)" % address,
           'force: true')
    failed(uplink_trunk, 'ports[1]: refusing', 'uplink of bridge %s' % br, address)
    failed(uplink_gone, 'refusing to remove port %s' % uplink)
    assert (snapshot(lab), ovs_port(br)) == before, 'a refused lockout changed OVS (other items included)'

    native, forced, trunk = run_tasks([
        # keeps untagged traffic flowing: fine without force
        {'args': {'port': uplink, 'vlan_mode': 'native-untagged', 'trunks': [10, 20]}},
        {'args': {'port': br, 'tag': 10, 'force': True}},
        # the host port is tagged now: the uplink no longer carries its untagged traffic
        {'args': {'port': uplink, 'vlan_mode': 'trunk', 'trunks': [10]}},
    ])
    assert ok(native)['changed'] is True
    assert ok(forced)['changed'] is True and any(address in w for w in forced.get('warnings', []))
    assert ok(trunk)['changed'] is True
    assert ovs_port(br)['tag'] == 10
    assert ovs_port(uplink) == {'tag': None, 'trunks': [10], 'vlan_mode': 'trunk', 'external_ids': {}}


def test_batch_is_one_transaction(lab, tmp_path):
    br = lab.bridge()
    a, b, c = lab.veth(), lab.veth(), lab.veth()
    add_ports(br, a, b)
    log = tmp_path / 'calls.jsonl'
    wrapper = tmp_path / 'ovs-vsctl'
    wrapper.write_text('#!%s\nimport json, os, sys\nwith open(%r, "a") as f:\n    f.write(json.dumps(sys.argv[1:]) + "\\n")\n'
                       'os.execv("/usr/bin/ovs-vsctl", ["ovs-vsctl"] + sys.argv[1:])\n' % (TARGET_PYTHON, str(log)))
    wrapper.chmod(0o755)

    r = ok(run_module({'bridge': br, 'ports': [{'port': a, 'tag': 100}, {'port': b, 'vlan_mode': 'trunk', 'trunks': [100, 200]},
                                               {'port': c, 'tag': 200, 'external_ids': {'k': 'v'}}]},
                      path_prefix=str(tmp_path)))
    assert [p['action'] for p in r['ports']] == ['updated', 'updated', 'created']
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    writes = [argv for argv in calls if '--format=json' not in argv]
    reads = [argv for argv in calls if '--format=json' in argv]
    assert len(writes) == 1, writes
    words = writes[0]
    for expected in (['set', 'Port', a, 'tag=100'], ['set', 'Port', b, 'trunks=100,200'], ['add-port', br, c],
                     ['set', 'Port', c, 'tag=200']):
        assert any(words[i:i + len(expected)] == expected for i in range(len(words))), (expected, words)
    assert len(reads) == 2  # the state, then the read-back of the added port
    assert ovs_port(a)['tag'] == 100 and ovs_port(b)['trunks'] == [100, 200] and ovs_port(c)['tag'] == 200


def test_failure_rolls_back_the_whole_transaction(lab):
    br = lab.bridge()
    a = lab.veth()
    add_ports(br, a)
    missing = hexname('npv')  # no such interface
    lab.links.append(missing)
    before = ovs_port(a)
    r = failed(run_module({'bridge': br, 'ports': [{'port': a, 'tag': 300}, {'port': missing, 'tag': 301}]}),
               'could not open network device %s (No such device)' % missing, "rolled back this run's transaction")
    assert r['ovs_errors']
    assert ovs_port(a) == before, 'the other item was not rolled back'
    assert ovs_port(missing) is None and sh(['ovs-vsctl', 'list-ports', br]).stdout.split() == [a]


def test_system_datapath_bridge_fails_with_ovs_error_and_is_removed(lab):
    br = lab.bridge(create=False)
    port = lab.veth()
    r = failed(run_module({'bridge': br, 'port': port, 'tag': 5}),  # datapath_type defaults to system
               'Open vSwitch could not bring up', 'Error detected while setting up', 'rolled back')
    assert r['ovs_errors']
    assert not bridge_exists(br) and ovs_port(port) is None


def test_traffic_follows_the_tags(lab):
    br = lab.bridge()
    ns1, p1 = lab.host_in_netns(SUBNET + '1/24')
    ns2, p2 = lab.host_in_netns(SUBNET + '2/24')
    ip2 = SUBNET + '2'

    ok(run_module({'bridge': br, 'ports': [{'port': p1, 'tag': 10}, {'port': p2, 'tag': 10}]}))
    assert can_ping(ns1, ip2), 'same tag: ping must work'
    assert can_tcp(lab, ns1, ns2, ip2), 'same tag: TCP must work'

    ok(run_module({'port': p2, 'tag': 20}))
    assert ovs_port(p2)['tag'] == 20
    assert not can_ping(ns1, ip2), 'different tags: ping must fail'
    assert not can_tcp(lab, ns1, ns2, ip2), 'different tags: TCP must fail'

    ok(run_module({'port': p1, 'tag': 20}))  # move the other one over
    assert can_ping(ns1, ip2) and can_tcp(lab, ns1, ns2, ip2), 'same tag again: traffic must flow'
