"""attachment_store: the record files, records built from a docker_veth run, re-apply parameters (no kernel)."""

from __future__ import annotations

import ast
import os
import stat

import pytest
import yaml

from ansible_collections.netplumb.pipework.plugins.module_utils.veth import store as st
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import ARGUMENT_SPEC, build_attachments

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..', '..'))
CID = 'c' * 64
OLD = 'o' * 64


class FakeContainer:
    def __init__(self, cid, name):
        self.id = cid
        self.name = name


def want(cid=CID, **kwargs):
    params = dict((k, None) for k in ARGUMENT_SPEC)
    params.update(kwargs)
    (a,) = build_attachments(params)
    if a.target_kind == 'container':
        a.container = FakeContainer(cid, kwargs['container']) if cid else None
        if cid:
            a.set_identity(cid)
    elif a.target_kind == 'netns':
        a.set_identity('netns:/run/netns/%s' % a.target)
    a.resolved_bridge_type = 'ovs'
    return a


def item_of(a, **kwargs):
    out = {'target': a.container.name if a.container else a.target, 'host_ifname': a.host_ifname,
           'bridge_type': 'ovs', 'addresses': ['10.0.0.2/24'], 'mac': '02:00:00:00:00:01', 'mtu': 1500, 'vlan': 10}
    out.update(kwargs)
    return out


@pytest.fixture
def store(tmp_path):
    return st.Store(root=str(tmp_path / 'state'), host='h1')


class FakeVsctl:
    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail

    def transact(self, commands):
        self.calls.append(commands)
        if self.fail:
            raise PipeworkError('db down')
        return ''


def test_host_id_from_env_and_sanitized(monkeypatch):
    monkeypatch.setenv(st.ENV_HOST_ID, 'host1')
    assert st.host_id() == 'host1'
    monkeypatch.setenv(st.ENV_HOST_ID, '../etc x')
    hid = st.host_id()
    assert '/' not in hid and ' ' not in hid and not hid.startswith('.')
    monkeypatch.setenv(st.ENV_STATE_DIR, '/tmp/somewhere')
    assert st.state_dir() == '/tmp/somewhere'


def test_save_is_atomic_root_only_and_skips_identical(store):
    rec = st.build_record({}, want(container='web', bridge='ovs0', address=['10.0.0.2/24']), item_of(want(container='web', bridge='ovs0')))
    assert store.save(rec) is True
    path = store.path(CID, 'eth1')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    assert os.listdir(store.dir) == [os.path.basename(path)], 'no temporary file left'
    mtime = os.stat(path).st_mtime_ns
    assert store.save(dict(rec)) is False
    assert os.stat(path).st_mtime_ns == mtime
    loaded = store.load(CID, 'eth1')
    assert loaded['host_id'] == 'h1' and loaded['version'] == st.RECORD_VERSION and loaded['vlan'] == 10
    assert [r['identity'] for r in store.records()] == [CID]
    assert store.forget(CID, 'eth1') is True and store.forget(CID, 'eth1') is False
    assert store.records() == []


def test_corrupt_files_are_skipped_and_reported(store):
    st.makedirs(store.dir)
    with open(os.path.join(store.dir, 'bad.json'), 'w') as f:
        f.write('{not json')
    assert store.records() == [] and store.problems() == ['bad.json']


def test_other_hosts_are_listed_not_read(tmp_path):
    one = st.Store(root=str(tmp_path), host='h1')
    two = st.Store(root=str(tmp_path), host='h2')
    a = want(container='web', bridge='ovs0')
    two.save(st.build_record({}, a, item_of(a)))
    assert one.records() == [] and one.other_hosts() == {'h2': 1}


def test_build_record_merges_unset_options_from_the_prior_record():
    first = want(container='web', bridge='ovs0', address=['10.0.0.2/24'], gateway='10.0.0.1',
                 routes=[{'dest': '10.9.0.0/16', 'via': '10.0.0.254'}], host_ifname='npweb0')
    rec = st.build_record({'docker_host': 'unix:///run/d.sock'}, first, item_of(first), bridge_datapath='netdev')
    assert rec['gateway'] == '10.0.0.1' and rec['routes'] == [{'dest': '10.9.0.0/16', 'via': '10.0.0.254'}]
    assert rec['host_ifname_explicit'] is True and rec['datapath_type'] == 'netdev'
    assert rec['docker_host'] == 'unix:///run/d.sock' and rec['mac'] == '02:00:00:00:00:01'
    second = want(container='web', bridge='ovs0', mtu=9000)
    rec2 = st.build_record({}, second, item_of(second, mtu=9000), prior=rec)
    assert rec2['gateway'] == '10.0.0.1' and rec2['routes'] == rec['routes'] and rec2['mtu'] == 9000
    cleared = want(container='web', bridge='ovs0', gateway='', routes=[])
    rec3 = st.build_record({}, cleared, item_of(cleared), prior=rec)
    assert rec3['gateway'] is None and rec3['routes'] == []


def test_build_record_drops_a_gateway_whose_subnet_went_away():
    a = want(container='web', bridge='ovs0')
    prior = {'gateway': '10.0.0.1', 'routes': [{'dest': '10.9.0.0/16', 'via': '10.0.0.254'}, {'dest': '10.8.0.0/16', 'via': None}]}
    rec = st.build_record({}, a, item_of(a, addresses=['192.168.5.2/24']), prior=prior)
    assert rec['gateway'] is None and rec['routes'] == [{'dest': '10.8.0.0/16', 'via': None}]


def test_reapply_params_present_and_absent():
    a = want(container='web', bridge='ovs0', address=['10.0.0.2/24'], gateway='10.0.0.1', mtu=1400)
    rec = st.build_record({'database_socket': 'unix:/x.sock'}, a, item_of(a, mtu=1400), bridge_datapath='netdev')
    params = st.reapply_params([rec])
    (item,) = params['attachments']
    assert item == {'container': CID, 'ifname': 'eth1', 'state': 'present', 'bridge': 'ovs0', 'bridge_type': 'ovs',
                    'datapath_type': 'netdev', 'address': ['10.0.0.2/24'], 'gateway': '10.0.0.1',
                    'mac': '02:00:00:00:00:01', 'mtu': 1400, 'vlan': 10}
    assert params['database_socket'] == 'unix:/x.sock'
    # What the module accepts: every key is an option of docker_veth's items.
    assert set(item) <= set(ARGUMENT_SPEC['attachments']['options'])
    build_attachments(dict(dict((k, None) for k in ARGUMENT_SPEC), **params))
    (gone,) = st.reapply_params([rec], state='absent')['attachments']
    assert gone == {'container': CID, 'ifname': 'eth1', 'state': 'absent', 'host_ifname': rec['host_ifname']}


class FakeOvs:
    def __init__(self, interfaces=None, bridges=None):
        self.interfaces = interfaces or {}
        self.bridges = bridges or {}


def test_record_run_writes_forgets_and_copies_into_ovs(store):
    a = want(container='web', bridge='ovs0', address=['10.0.0.2/24'])
    vsctl = FakeVsctl()
    warnings = st.record_run({}, [a], [item_of(a)], FakeOvs(bridges={'ovs0': {'datapath_type': 'netdev'}}), vsctl,
                             added_ports={a.host_ifname}, store=store)
    assert warnings == []
    (rec,) = store.records()
    assert rec['datapath_type'] == 'netdev'
    (cmds,) = vsctl.calls
    assert cmds == ovsdb.cmd_set_interface_external_ids(a.host_ifname, {st.EXT_CONFIG: st.config_json(rec)})
    # The same run again with the config already in OVS and the port not re-added: no OVS call.
    ovs = FakeOvs({a.host_ifname: {'external_ids': {st.EXT_CONFIG: st.config_json(rec)}}},
                  {'ovs0': {'datapath_type': 'netdev'}})
    st.record_run({}, [a], [item_of(a)], ovs, vsctl, store=store)
    assert len(vsctl.calls) == 1
    # Absent of a container that is gone (no identity): found by name and forgotten.
    gone = want(cid=None, container='web', state='absent')
    st.record_run({}, [gone], [{'target': 'web'}], None, None, store=store)
    assert store.records() == []


def test_record_run_forgets_the_record_of_an_earlier_container_of_that_name(store):
    old = want(cid=OLD, container='web', bridge='ovs0')
    st.record_run({}, [old], [item_of(old)], None, None, store=store)
    new = want(container='web', bridge='ovs0')
    st.record_run({}, [new], [item_of(new)], None, None, store=store)
    assert [r['container_id'] for r in store.records()] == [CID]


def test_record_run_reports_failures_as_warnings(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    store = st.Store(root=str(blocker), host='h1')  # a file where the directory should be
    a = want(container='web', bridge='ovs0')
    warnings = st.record_run({}, [a], [item_of(a)], None, None, store=store)
    assert len(warnings) == 1 and 'could not record the attachments' in warnings[0]
    vsctl = FakeVsctl(fail=True)
    good = st.Store(root=str(tmp_path / 'ok'), host='h1')
    warnings = st.record_run({}, [a], [item_of(a)], FakeOvs(), vsctl, store=good)
    assert len(warnings) == 1 and 'external_ids' in warnings[0] and len(good.records()) == 1


def _imports(path):
    """The module_utils files (paths relative to plugins/module_utils) that a source file imports."""
    tree = ast.parse(open(path).read())
    prefix = 'ansible_collections.netplumb.pipework.plugins.module_utils.'
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            package = node.module[len(prefix):].replace('.', '/')
            base = os.path.join(REPO, 'plugins', 'module_utils', package)
            if os.path.isdir(base):  # "from ...module_utils.veth import store"
                found.update(package + '/' + alias.name + '.py' for alias in node.names)
            else:  # "from ...module_utils.veth.store import Store"
                found.add(package + '.py')
    return found


def test_the_role_installs_every_module_util_the_agent_imports():
    base = os.path.join(REPO, 'plugins', 'module_utils')
    needed, todo = set(), ['veth/agent.py']
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(_imports(os.path.join(base, name)))
    with open(os.path.join(REPO, 'roles', 'persistence', 'vars', 'main.yml')) as f:
        listed = set(yaml.safe_load(f)['persistence_module_utils'])
    assert listed == needed


def test_a_run_of_many_records_syncs_the_directory_once(store, monkeypatch):
    """Each file is fsynced before its rename; the directory once for the whole run, not once per record."""
    synced = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real_fsync(fd)
    monkeypatch.setattr(st.os, 'fsync', counting_fsync)
    wants = [want(cid=('%02d' % i) * 32, container='web%d' % i, bridge='ovs0') for i in range(20)]
    st.record_run({}, wants, [item_of(a) for a in wants], None, None, store=store)
    assert len(store.records()) == 20
    assert synced.count(False) == 20 and synced.count(True) == 1
    # An identical re-run writes nothing and syncs nothing.
    del synced[:]
    st.record_run({}, wants, [item_of(a) for a in wants], None, None, store=store)
    assert synced == []


def test_record_index_finds_exactly_what_a_full_scan_finds(store):
    kinds = [want(cid=('%x' % i) * 64, container='app%d' % (i % 3), bridge='ovs0') for i in range(1, 7)]
    kinds += [want(container='other', bridge='ovs0', ifname='eth2'), want(netns='blue', bridge='ovs0')]
    st.record_run({}, kinds, [item_of(a) for a in kinds], None, None, store=store)
    records = store.records()
    index = st.RecordIndex(records)
    probes = kinds + [want(cid=None, container='app1', state='absent'), want(cid=None, container='nope', state='absent'),
                      want(netns='blue', state='absent'), want(container='other', ifname='eth1', bridge='ovs0')]
    for w in probes:
        full = sorted(r['_path'] for r in records if st._matches_target(r, w))  # pylint: disable=protected-access
        assert sorted(r['_path'] for r in index.matching(w)) == full, w.target
    assert any(index.matching(w) for w in probes) and not index.matching(probes[-3])
