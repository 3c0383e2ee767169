"""ovsdb.py as ovs_vlan_port uses it: JSON decoding of OVSDB data, table parsing, the state snapshot,
the transaction/read-back runner, and the command builders. The JSON below is what ovs-vsctl 3.1
prints with --format=json (copied from a real run, names changed)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

BRIDGE = ('{"data":[["3f0c","ovsnp1",["set",[["uuid","p-br"],["uuid","p-a"],["uuid","p-b"]]],"netdev",'
          '["map",[["netplumb_owner","netplumb.pipework"]]]],'
          '["9d2e","ovsnp2",["uuid","p-c"],"",["map",[]]]],'
          '"headings":["_uuid","name","ports","datapath_type","external_ids"]}')
PORT = ('{"data":[["p-br","ovsnp1",["uuid","i-br"],["set",[]],["set",[]],["set",[]],["map",[]]],'
        '["p-a","npva",["uuid","i-a"],100,["set",[]],"access",["map",[["role","uplink"]]]],'
        '["p-b","bond0",["set",[["uuid","i-b1"],["uuid","i-b2"]]],["set",[]],["set",[100,200]],"trunk",["map",[]]],'
        '["p-c","npvc",["uuid","i-c"],["set",[]],300,["set",[]],["map",[]]]],'
        '"headings":["_uuid","name","interfaces","tag","trunks","vlan_mode","external_ids"]}')
IFACE = ('{"data":[["i-br","ovsnp1","internal",65534,["set",[]],["map",[]]],'
         '["i-a","npva","",1,["set",[]],["map",[["container_id","abc"]]]],'
         '["i-b1","npvb1","",2,["set",[]],["map",[]]],'
         '["i-b2","npvb2","",-1,"could not open network device npvb2 (No such device)",["map",[]]],'
         '["i-c","npvc","",["set",[]],["set",[]],["map",[]]]],'
         '"headings":["_uuid","name","type","ofport","error","external_ids"]}')


class FakeRun:
    """Ansible's run_command stand-in: records argv, answers reads with the tables above."""

    def __init__(self, read_out=None, rc=0, err=''):
        self.calls = []
        self.read_out = read_out if read_out is not None else '\n'.join((BRIDGE, PORT, IFACE)) + '\n'
        self.rc = rc
        self.err = err

    def __call__(self, argv):
        self.calls.append(list(argv))
        if '--format=json' in argv:
            return self.rc, self.read_out, self.err
        return self.rc, '', self.err


# ---- decode / scalar / parse_table ------------------------------------------------------------

@pytest.mark.parametrize('datum, expected', [
    (['set', []], []),
    (['set', [1, 2, 3]], [1, 2, 3]),
    (['set', [['uuid', 'a'], ['uuid', 'b']]], ['a', 'b']),
    (['map', []], {}),
    (['map', [['k', 'v'], ['k2', 'a b=c']]], {'k': 'v', 'k2': 'a b=c'}),
    (['map', [['k', ['uuid', 'u1']]]], {'k': 'u1'}),
    (['uuid', '0f1e'], '0f1e'),
    (['named-uuid', 'row1'], 'row1'),
    (100, 100),
    ('access', 'access'),
    ('', ''),
    ([1, 2], [1, 2]),            # not an OVSDB tagged pair: left alone
    (['set', ['set', 'map']], ['set', 'map']),  # strings that look like tags stay strings
])
def test_decode(datum, expected):
    assert ovsdb.decode(datum) == expected


@pytest.mark.parametrize('value, expected', [([], None), ([5], 5), (5, 5), ('x', 'x'), (None, None), ([1, 2], [1, 2])])
def test_scalar(value, expected):
    assert ovsdb.scalar(value) == expected


def test_parse_table_decodes_every_cell():
    rows = ovsdb.parse_table(PORT)
    assert [r['name'] for r in rows] == ['ovsnp1', 'npva', 'bond0', 'npvc']
    assert rows[1] == {'_uuid': 'p-a', 'name': 'npva', 'interfaces': 'i-a', 'tag': 100, 'trunks': [],
                       'vlan_mode': 'access', 'external_ids': {'role': 'uplink'}}
    assert rows[2]['interfaces'] == ['i-b1', 'i-b2']
    assert rows[3]['trunks'] == 300  # one element: ovs-vsctl prints the bare atom


def test_parse_table_empty():
    assert ovsdb.parse_table('{"data":[],"headings":["name"]}') == []


@pytest.mark.parametrize('text', [
    'ovs-vsctl: no row "x" in table Port',
    '{"headings":["name"]}',
    '{"data":[]}',
    '[1, 2]',
    '',
])
def test_parse_table_refuses_what_is_not_a_table(text):
    with pytest.raises(PipeworkError) as err:
        ovsdb.parse_table(text)
    assert 'not a JSON table' in err.value.msg


def test_quote_is_a_json_string():
    assert ovsdb.quote('a "b"\\c') == json.dumps('a "b"\\c')
    assert ovsdb.quote(5) == '"5"'


# ---- the snapshot -----------------------------------------------------------------------------

def test_read_state_is_one_call_and_indexes_by_name():
    run = FakeRun()
    state = ovsdb.Vsctl(run, 'unix:/tmp/db.sock', 7).read_state()
    assert len(run.calls) == 1
    argv = run.calls[0]
    assert argv[:3] == ['ovs-vsctl', '--db=unix:/tmp/db.sock', '--timeout=7']
    assert argv.count('list') == 3 and '--format=json' in argv
    assert state.bridges['ovsnp1'] == {'datapath_type': 'netdev', 'ports': ['bond0', 'npva', 'ovsnp1'],
                                       'external_ids': {'netplumb_owner': 'netplumb.pipework'}}
    assert state.bridges['ovsnp2']['datapath_type'] == 'system'  # empty means the default, system
    assert state.ports['npva'] == {'bridge': 'ovsnp1', 'interfaces': ['npva'], 'tag': 100, 'trunks': [],
                                   'vlan_mode': 'access', 'external_ids': {'role': 'uplink'}}
    assert state.ports['ovsnp1']['tag'] is None and state.ports['ovsnp1']['vlan_mode'] is None
    assert state.ports['bond0']['interfaces'] == ['npvb1', 'npvb2']
    assert state.ports['bond0']['trunks'] == [100, 200]
    assert state.ports['npvc']['trunks'] == [300] and state.ports['npvc']['bridge'] == 'ovsnp2'
    assert state.interfaces['ovsnp1']['type'] == 'internal'
    assert state.interfaces['npvb2']['ofport'] == -1
    assert state.interfaces['npvb2']['error'].startswith('could not open')
    assert state.interfaces['npvc']['ofport'] is None and state.interfaces['npvc']['error'] is None
    assert state.port_of_interface('npvb2') == 'bond0'
    assert state.port_of_interface('nothere') is None
    assert state.interfaces_where(container_id='abc') == ['npva']


def test_read_state_of_an_empty_database():
    empty = '{"data":[],"headings":["_uuid","name"]}'
    state = ovsdb.Vsctl(FakeRun(read_out='\n'.join([empty] * 3))).read_state()
    assert state.bridges == {} and state.ports == {} and state.interfaces == {}


def test_read_state_failure_names_the_socket_and_ovs_words():
    run = FakeRun(rc=1, err='ovs-vsctl: unix:/nope: database connection failed (No such file or directory)\n')
    with pytest.raises(PipeworkError) as err:
        ovsdb.Vsctl(run, 'unix:/nope').read_state()
    assert 'unix:/nope' in err.value.msg and 'database connection failed' in err.value.msg


def test_read_state_wants_three_tables():
    with pytest.raises(PipeworkError) as err:
        ovsdb.Vsctl(FakeRun(read_out=BRIDGE + '\n')).read_state()
    assert '1 tables, expected 3' in err.value.msg


# ---- transaction and read-back ----------------------------------------------------------------

def test_transact_joins_commands_into_one_call():
    run = FakeRun()
    ovsdb.Vsctl(run).transact([['set', 'Port', 'a', 'tag=1'], ['clear', 'Port', 'b', 'trunks']])
    assert run.calls == [['ovs-vsctl', '--db=%s' % ovsdb.DEFAULT_DB_SOCKET, '--timeout=30',
                          '--', 'set', 'Port', 'a', 'tag=1', '--', 'clear', 'Port', 'b', 'trunks']]


def test_transact_of_nothing_runs_nothing():
    run = FakeRun()
    assert ovsdb.Vsctl(run).transact([]) == ''
    assert run.calls == []


def test_transact_failure_carries_ovs_words():
    run = FakeRun(rc=1, err='ovs-vsctl: cannot create a port named x because a port named x already exists\n')
    with pytest.raises(PipeworkError) as err:
        ovsdb.Vsctl(run).transact([['add-port', 'b', 'x']])
    assert 'already exists' in err.value.msg
    assert err.value.details['command'][-3:] == ['add-port', 'b', 'x']


def test_check_interfaces_reports_ovs_errors():
    vsctl = ovsdb.Vsctl(FakeRun())
    vsctl.check_interfaces(['npva', 'npvb1', 'ovsnp1'])  # all fine
    with pytest.raises(PipeworkError) as err:
        vsctl.check_interfaces(['npva', 'npvb2', 'npvc', 'gone'], transact_stderr='ovs-vsctl: Error detected\n')
    msg = err.value.msg
    assert 'could not bring up 3 interface(s)' in msg
    assert 'npvb2: could not open network device npvb2 (No such device)' in msg
    assert 'npvc: no OpenFlow port assigned' in msg
    assert 'gone: not in the Interface table' in msg
    assert 'ovs-vsctl said: ovs-vsctl: Error detected' in msg


# ---- command builders -------------------------------------------------------------------------

def test_cmd_set_map_keys_quotes_keys_and_values_and_removes_nulls():
    cmds = ovsdb.cmd_set_map_keys('Port', 'p', 'external_ids', {'b': 'x y', 'k8s.ovn.org/a:b': '1', 'gone': None})
    assert cmds == [  # sorted by key: the same input gives the same transaction
        ['set', 'Port', 'p', 'external_ids:"b"="x y"'],
        ['remove', 'Port', 'p', 'external_ids', '"gone"'],
        ['set', 'Port', 'p', 'external_ids:"k8s.ovn.org/a:b"="1"'],
    ]
    assert ovsdb.cmd_set_map_keys('Port', 'p', 'external_ids', {}) == []
    assert ovsdb.cmd_set_map_keys('Port', 'p', 'external_ids', None) == []


def test_cmd_set_port_columns_sets_and_clears():
    assert ovsdb.cmd_set_port_columns('p') == []
    assert ovsdb.cmd_set_port_columns('p', tag=5, trunks=[20, 10], vlan_mode='native-untagged') == [
        ['set', 'Port', 'p', 'tag=5'], ['set', 'Port', 'p', 'trunks=10,20'], ['set', 'Port', 'p', 'vlan_mode=native-untagged']]
    assert ovsdb.cmd_set_port_columns('p', tag=0, trunks=[], vlan_mode='') == [
        ['clear', 'Port', 'p', 'tag'], ['clear', 'Port', 'p', 'trunks'], ['clear', 'Port', 'p', 'vlan_mode']]
