"""ovs_vlan_port planning, the lockout rule and the runner, offline: the OVS state is built as ovs-vsctl
prints it (--format=json) and parsed by ovsdb.Vsctl.read_state; the host namespace is a NamespaceState."""

from __future__ import annotations

import contextlib
import ipaddress
import json

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port import apply as ovs_port_apply
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import NamespaceState
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.plan import (
    check_lockout, is_uplink, passes_untagged, plan_all, transaction)
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.spec import ARGUMENT_SPEC, build_ports

OWNER = {ovsdb.EXT_OWNER: ovsdb.OWNER}


# ---- builders ---------------------------------------------------------------------------------

def _set(values):
    values = list(values)
    return values[0] if len(values) == 1 else ['set', values]


def _map(d):
    return ['map', [[k, v] for k, v in sorted((d or {}).items())]]


def ovs_tables(bridges):
    """ovs-vsctl --format=json output of Bridge, Port, Interface for
    {bridge: {'datapath_type': .., 'ports': {port: {'tag', 'trunks', 'vlan_mode', 'external_ids',
    'interfaces': {iface: {'type', 'external_ids', 'ofport', 'error'}}}}}}.
    The bridge's local port (type internal) is added unless listed."""
    brows, prows, irows = [], [], []
    for bname, b in bridges.items():
        ports = dict(b.get('ports') or {})
        ports.setdefault(bname, {'interfaces': {bname: {'type': 'internal'}}})
        puuids = []
        for pname, p in ports.items():
            iuuids = []
            for iname, i in (p.get('interfaces') or {pname: {}}).items():
                iu = 'i-' + iname
                iuuids.append(['uuid', iu])
                irows.append([iu, iname, i.get('type', ''), i.get('ofport', 1),
                              i['error'] if i.get('error') else ['set', []], _map(i.get('external_ids'))])
            pu = 'p-' + pname
            puuids.append(['uuid', pu])
            prows.append([pu, pname, _set(iuuids), p['tag'] if p.get('tag') else ['set', []],
                          _set(p.get('trunks') or []), p['vlan_mode'] if p.get('vlan_mode') else ['set', []],
                          _map(p.get('external_ids'))])
        brows.append(['b-' + bname, bname, _set(puuids), b.get('datapath_type', ''), _map(b.get('external_ids'))])
    tables = [
        {'headings': ['_uuid', 'name', 'ports', 'datapath_type', 'external_ids'], 'data': brows},
        {'headings': ['_uuid', 'name', 'interfaces', 'tag', 'trunks', 'vlan_mode', 'external_ids'], 'data': prows},
        {'headings': ['_uuid', 'name', 'type', 'ofport', 'error', 'external_ids'], 'data': irows},
    ]
    return '\n'.join(json.dumps(t, separators=(',', ':')) for t in tables) + '\n'


class FakeRun:
    """run_command stand-in: reads return the tables; writes are recorded; ``after_write`` (tables)
    is what reads return once a write happened (the read-back)."""

    def __init__(self, bridges, after_write=None, write_rc=0, write_err=''):
        self.tables = ovs_tables(bridges)
        self.after_write = ovs_tables(after_write) if after_write is not None else None
        self.write_rc = write_rc
        self.write_err = write_err
        self.reads = 0
        self.writes = []

    def __call__(self, argv):
        if '--format=json' in argv:
            self.reads += 1
            return 0, (self.after_write if self.writes and self.after_write else self.tables), ''
        self.writes.append(commands_of(argv))
        return (self.write_rc, '', self.write_err) if len(self.writes) == 1 else (0, '', '')


def commands_of(argv):
    """The commands of one ovs-vsctl transaction argv (split at '--')."""
    out, cur = [], None
    for word in argv:
        if word == '--':
            cur = []
            out.append(cur)
        elif cur is not None:
            cur.append(word)
    return out


def state(bridges):
    return ovsdb.Vsctl(FakeRun(bridges)).read_state()


def host(links=None):
    """links: {name: {'kind': .., 'addrs': ['198.51.100.1/24', ...]}}; eth0 always there with 192.0.2.2."""
    links = dict(links or {})
    links.setdefault('eth0', {'addrs': ['192.0.2.2/24']})
    lrows, arows = [], []
    for index, (name, spec) in enumerate(sorted(links.items()), start=2):
        lrows.append({'index': index, 'name': name, 'kind': spec.get('kind'), 'master': None, 'mtu': 1500,
                      'mac': '02:00:00:00:00:%02x' % index, 'peer': None, 'up': True})
        for a in spec.get('addrs', []):
            arows.append({'index': index, 'address': ipaddress.ip_interface(a), 'scope': 0})
        arows.append({'index': index, 'address': ipaddress.ip_interface('fe80::%x/64' % index), 'scope': 253})
    return NamespaceState(lrows, arows, [])


def params(**kw):
    out = dict((k, None) for k in ARGUMENT_SPEC)
    out['timeout'] = 30
    out.update(kw)
    return out


def plan(bridges, links=None, **kw):
    ovs = state(bridges)
    wants = build_ports(params(**kw))
    plans, brs = plan_all(wants, ovs, host(links))
    return plans, brs, ovs


# A bridge like the ones in the issue: ovs0 with the host address on its internal port, an uplink
# eth1, a container port and a VM tap.
def lab(host_tag=None, uplink=None, extra_ports=None):
    ports = {
        'ovs0': {'tag': host_tag, 'interfaces': {'ovs0': {'type': 'internal'}}},
        'eth1': dict(uplink or {}),
        'np1c2d3e4f5a6': {'tag': 100, 'interfaces': {'np1c2d3e4f5a6': {'external_ids': {'container_id': 'abc'}}}},
        'vnet0': {'tag': 200},
    }
    ports.update(extra_ports or {})
    return {'ovs0': {'datapath_type': 'netdev', 'ports': ports}}


LAB_LINKS = {'ovs0': {'kind': 'openvswitch', 'addrs': ['198.51.100.1/24']}, 'eth1': {}, 'np1c2d3e4f5a6': {'kind': 'veth'},
             'vnet0': {'kind': 'tun'}}


# ---- VLAN semantics ---------------------------------------------------------------------------

@pytest.mark.parametrize('cols, passes', [
    ({}, True),                                                    # trunk of every VLAN
    ({'tag': 100}, False),                                         # empty mode + tag: access
    ({'vlan_mode': 'access'}, True),
    ({'vlan_mode': 'access', 'tag': 100}, False),
    ({'vlan_mode': 'trunk', 'trunks': [100, 200]}, False),
    ({'vlan_mode': 'trunk', 'trunks': [0, 100]}, True),
    ({'trunks': [100]}, False),                                    # empty mode, no tag: trunk
    ({'vlan_mode': 'native-untagged', 'tag': 100}, False),
    ({'vlan_mode': 'native-untagged', 'trunks': [100]}, True),
    ({'vlan_mode': 'native-tagged', 'tag': 100}, False),
    ({'vlan_mode': 'native-tagged'}, True),
    ({'vlan_mode': 'native-tagged', 'trunks': [100]}, False),
    ({'vlan_mode': 'native-tagged', 'trunks': [0, 100]}, True),
])
def test_passes_untagged(cols, passes):
    assert passes_untagged(cols) is passes


def test_a_missing_port_passes_nothing():
    assert passes_untagged(None) is False


# ---- planning ---------------------------------------------------------------------------------

def test_set_tag_on_existing_port():
    (p,), brs, _ovs = plan(lab(), port='vnet0', tag=300)
    assert p.action == 'updated' and p.changes == ['set tag of vnet0 to 300']
    assert p.commands == [['set', 'Port', 'vnet0', 'tag=300']]
    assert p.undo == [['set', 'Port', 'vnet0', 'tag=200']]
    assert p.before['tag'] == 200 and p.after['tag'] == 300 and p.bridge == 'ovs0'
    assert p.check == [] and brs == {}


def test_matching_port_is_no_change():
    (p,), _brs, _ovs = plan(lab(), port='np1c2d3e4f5a6', bridge='ovs0', tag=100, external_ids={'x': None})
    assert p.action == 'none' and p.commands == [] and p.changes == []
    assert p.after == p.before


def test_unset_options_are_left_alone():
    bridges = lab(extra_ports={'t1': {'vlan_mode': 'trunk', 'trunks': [10, 20], 'external_ids': {'a': '1', 'b': '2'}}})
    (p,), _brs, _ovs = plan(bridges, port='t1', external_ids={'a': '9'})
    assert p.commands == [['set', 'Port', 't1', 'external_ids:"a"="9"']]
    assert p.after == {'bridge': 'ovs0', 'tag': None, 'trunks': [10, 20], 'vlan_mode': 'trunk',
                       'external_ids': {'a': '9', 'b': '2'}}
    assert p.undo == [['set', 'Port', 't1', 'external_ids:"a"="1"']]


def test_clearing_values():
    bridges = lab(extra_ports={'t1': {'tag': 5, 'vlan_mode': 'native-untagged', 'trunks': [10, 20],
                                      'external_ids': {'a': '1'}}})
    (p,), _brs, _ovs = plan(bridges, port='t1', tag=0, trunks=[], external_ids={'a': None, 'never': None})
    assert p.commands == [['clear', 'Port', 't1', 'tag'], ['clear', 'Port', 't1', 'trunks'],
                          ['remove', 'Port', 't1', 'external_ids', '"a"']]
    assert p.undo == [['set', 'Port', 't1', 'tag=5'], ['set', 'Port', 't1', 'trunks=10,20'],
                      ['set', 'Port', 't1', 'external_ids:"a"="1"']]
    assert p.after['tag'] is None and p.after['trunks'] == [] and p.after['external_ids'] == {}
    assert p.after['vlan_mode'] == 'native-untagged'


def test_vlan_mode_change_and_undo_of_an_empty_mode():
    (p,), _brs, _ovs = plan(lab(), port='vnet0', vlan_mode='native-untagged', trunks=[300, 400])
    assert p.commands == [['set', 'Port', 'vnet0', 'trunks=300,400'], ['set', 'Port', 'vnet0', 'vlan_mode=native-untagged']]
    assert p.undo == [['clear', 'Port', 'vnet0', 'trunks'], ['clear', 'Port', 'vnet0', 'vlan_mode']]


def test_new_port_gets_its_vlan_in_the_same_transaction():
    (p,), brs, _ovs = plan(lab(), bridge='ovs0', port='eth2', tag=100, external_ids={'role': 'x', 'no': None})
    assert p.action == 'created' and p.check == ['eth2']
    assert p.commands == [
        ['add-port', 'ovs0', 'eth2'],
        ['set', 'Interface', 'eth2', 'external_ids:netplumb_owner="netplumb.pipework"'],
        ['set', 'Port', 'eth2', 'tag=100'],
        ['set', 'Port', 'eth2', 'external_ids:"netplumb_owner"="netplumb.pipework"'],
        ['set', 'Port', 'eth2', 'external_ids:"role"="x"'],
    ]
    assert p.undo == [['--if-exists', 'del-port', 'eth2']]
    assert p.before is None and p.after == {'bridge': 'ovs0', 'tag': 100, 'trunks': [], 'vlan_mode': None,
                                            'external_ids': dict(OWNER, role='x')}
    assert not brs['ovs0'].create


def test_new_port_needs_a_bridge():
    with pytest.raises(PipeworkError) as err:
        plan(lab(), port='eth2', tag=5)
    assert "bridge: port 'eth2' is not on any Open vSwitch bridge" in err.value.msg


def test_port_on_another_bridge_is_not_moved():
    bridges = dict(lab(), ovs9={'datapath_type': 'netdev'})
    with pytest.raises(PipeworkError) as err:
        plan(bridges, ports=[{'port': 'vnet0', 'bridge': 'ovs9', 'tag': 5}])
    assert "ports[0].bridge: port 'vnet0' is on bridge 'ovs0', not 'ovs9'" in err.value.msg


def test_interface_already_in_a_bond():
    bridges = lab(extra_ports={'bond0': {'interfaces': {'eth2': {}, 'eth3': {}}}})
    with pytest.raises(PipeworkError) as err:
        plan(bridges, bridge='ovs0', port='eth3')
    assert "port: interface 'eth3' is already a member of port 'bond0'" in err.value.msg


@pytest.mark.parametrize('name, dp, expect', [
    ('ovs7', None, 'system'),      # ovs* names are created, with OVS's default datapath
    ('ovs7', 'netdev', 'netdev'),
    ('lab-sw', 'netdev', 'netdev'),  # any name when datapath_type is given
])
def test_missing_bridge_is_created_only_by_rule(name, dp, expect):
    (p,), brs, _ovs = plan(lab(), bridge=name, port='eth2', datapath_type=dp)
    b = brs[name]
    assert b.create and b.datapath_type == expect
    commands, check, undo = transaction([p], brs)
    assert commands[:3] == [['--may-exist', 'add-br', name], ['set', 'Bridge', name, 'datapath_type=%s' % expect],
                            ['set', 'Bridge', name, 'external_ids:netplumb_owner="netplumb.pipework"']]
    assert check == [name, 'eth2']
    assert undo == [['--if-exists', 'del-port', 'eth2'], ['--if-exists', 'del-br', name]]


def test_a_typo_never_creates_a_bridge():
    with pytest.raises(PipeworkError) as err:
        plan(lab(), bridge='osv0', port='eth2', tag=100)
    assert "bridge: Open vSwitch bridge 'osv0' does not exist" in err.value.msg
    assert 'datapath_type' in err.value.msg


def test_a_linux_interface_is_not_an_ovs_bridge():
    with pytest.raises(PipeworkError) as err:
        plan(lab(), {'ovsbr': {'kind': 'bridge'}}, bridge='ovsbr', port='eth2')
    assert "bridge: 'ovsbr' is not an Open vSwitch bridge (it is a bridge interface" in err.value.msg


def test_datapath_type_mismatch():
    with pytest.raises(PipeworkError) as err:
        plan(lab(), bridge='ovs0', port='vnet0', datapath_type='system')
    assert "datapath_type: bridge 'ovs0' exists with datapath_type netdev, not system" in err.value.msg
    with pytest.raises(PipeworkError) as err:
        plan(lab(), ports=[{'port': 'a1', 'bridge': 'ovs5', 'datapath_type': 'netdev'},
                           {'port': 'a2', 'bridge': 'ovs5', 'datapath_type': 'system'}])
    assert "ports[1].datapath_type: bridge 'ovs5' is created with datapath_type netdev, not system" in err.value.msg


def test_the_bridge_local_port_of_a_new_bridge_is_not_added_twice():
    (p,), brs, _ovs = plan({}, bridge='ovs5', port='ovs5', tag=7)
    assert brs['ovs5'].create
    assert p.commands == [['set', 'Port', 'ovs5', 'tag=7'],
                          ['set', 'Port', 'ovs5', 'external_ids:"netplumb_owner"="netplumb.pipework"']]
    assert p.undo == []


def test_absent():
    (p,), _brs, _ovs = plan(lab(), port='vnet0', state='absent')
    assert p.action == 'removed' and p.commands == [['del-port', 'ovs0', 'vnet0']] and p.after is None
    assert p.undo[0] == ['--may-exist', 'add-port', 'ovs0', 'vnet0']
    assert ['set', 'Port', 'vnet0', 'tag=200'] in p.undo
    (p,), _brs, _ovs = plan(lab(), port='gone0', state='absent')
    assert p.action == 'none' and p.commands == []


def test_absent_undo_restores_type_and_bond_members():
    bridges = lab(extra_ports={'bond0': {'trunks': [5], 'interfaces': {'eth2': {}, 'eth3': {}}},
                               'int1': {'interfaces': {'int1': {'type': 'internal', 'external_ids': {'k': 'v'}}}}})
    plans, _brs, _ovs = plan(bridges, ports=[{'port': 'bond0', 'state': 'absent'}, {'port': 'int1', 'state': 'absent'}])
    assert plans[0].undo[0] == ['--may-exist', 'add-bond', 'ovs0', 'bond0', 'eth2', 'eth3']
    assert ['set', 'Port', 'bond0', 'trunks=5'] in plans[0].undo
    assert plans[1].undo[:3] == [['--may-exist', 'add-port', 'ovs0', 'int1'], ['set', 'Interface', 'int1', 'type=internal'],
                                 ['set', 'Interface', 'int1', 'external_ids:"k"="v"']]


def test_absent_refusals():
    with pytest.raises(PipeworkError) as err:
        plan(lab(), port='ovs0', state='absent')
    assert "port: 'ovs0' is the local port of bridge 'ovs0'" in err.value.msg
    with pytest.raises(PipeworkError) as err:
        plan(lab(), port='vnet0', bridge='ovs9', state='absent')
    assert "bridge: port 'vnet0' is on bridge 'ovs0', not 'ovs9'" in err.value.msg


def test_batch_is_one_transaction_in_item_order_and_undo_in_reverse():
    plans, brs, _ovs = plan(lab(), bridge='ovs0', ports=[
        {'port': 'vnet0', 'tag': 201}, {'port': 'eth2', 'tag': 5}, {'port': 'np1c2d3e4f5a6', 'state': 'absent'}])
    commands, check, undo = transaction(plans, brs)
    assert commands == plans[0].commands + plans[1].commands + plans[2].commands
    assert check == ['eth2']
    assert undo == plans[2].undo + plans[1].undo + plans[0].undo


# ---- the lockout rule -------------------------------------------------------------------------

def lockout(bridges, links, **kw):
    plans, _brs, ovs = plan(bridges, links, **kw)
    return check_lockout(plans, ovs, host(links))


def refused(bridges, links, *words, **kw):
    with pytest.raises(PipeworkError) as err:
        lockout(bridges, links, **kw)
    for w in words:
        assert w in err.value.msg, err.value.msg
    return err.value


def test_tagging_the_host_port_is_a_lockout():
    err = refused(lab(), LAB_LINKS, 'refusing to set tag of ovs0 to 10', "carries the host's own addresses (198.51.100.1/24)",
                  'force: true', port='ovs0', tag=10)
    assert err.details['refused']


@pytest.mark.parametrize('kw', [
    {'vlan_mode': 'trunk', 'trunks': [100]},
    {'vlan_mode': 'native-untagged', 'tag': 30},
    {'vlan_mode': 'native-tagged', 'trunks': [7]},
])
def test_other_ways_to_stop_untagged_traffic_on_the_host_port(kw):
    refused(lab(), LAB_LINKS, 'ovs_vlan_port: refusing', port='ovs0', **kw)


@pytest.mark.parametrize('kw', [
    {'vlan_mode': 'native-untagged', 'trunks': [100]},
    {'vlan_mode': 'access'},
    {'tag': 0},
    {'external_ids': {'a': 'b'}},
])
def test_host_port_changes_that_keep_untagged_traffic(kw):
    assert lockout(lab(), LAB_LINKS, port='ovs0', **kw) == []


def test_force_turns_the_refusal_into_a_warning():
    warnings = lockout(lab(), LAB_LINKS, port='ovs0', tag=10, force=True)
    assert len(warnings) == 1 and 'forced' in warnings[0] and '198.51.100.1/24' in warnings[0]


def test_an_already_tagged_host_port_may_change_tag():
    assert lockout(lab(host_tag=10), LAB_LINKS, port='ovs0', tag=11) == []


def test_any_port_holding_host_addresses_counts_not_only_internal_ones():
    links = dict(LAB_LINKS, eth1={'addrs': ['203.0.113.5/24', '2001:db8::5/64']})
    refused(lab(), links, "port eth1 carries the host's own addresses (203.0.113.5/24, 2001:db8::5/64)",
            port='eth1', tag=4)


def test_link_local_addresses_do_not_count():
    links = dict(LAB_LINKS, ovs0={'kind': 'openvswitch'})  # only its fe80:: address
    assert lockout(lab(), links, port='ovs0', tag=10) == []


def test_removing_or_adding_a_host_address_port_is_a_lockout():
    bridges = lab(extra_ports={'mgmt0': {'tag': 9, 'interfaces': {'mgmt0': {'type': 'internal'}}}})
    links = dict(LAB_LINKS, mgmt0={'addrs': ['10.9.0.1/24']}, eth5={'addrs': ['10.5.0.1/24']})
    refused(bridges, links, 'refusing to remove port mgmt0 from bridge ovs0', '10.9.0.1/24', port='mgmt0', state='absent')
    refused(bridges, links, 'refusing to add port eth5 to bridge ovs0', '10.5.0.1/24', bridge='ovs0', port='eth5')


def test_uplink_of_an_untagged_host_port_is_guarded():
    refused(lab(), LAB_LINKS, 'refusing to set tag of eth1 to 100',
            'port eth1 is an uplink of bridge ovs0, whose internal port ovs0', '198.51.100.1/24', port='eth1', tag=100)
    refused(lab(), LAB_LINKS, 'uplink', port='eth1', vlan_mode='trunk', trunks=[100, 200])
    refused(lab(), LAB_LINKS, 'refusing to remove port eth1', port='eth1', state='absent')
    assert lockout(lab(), LAB_LINKS, port='eth1', vlan_mode='native-untagged', tag=0, trunks=[100, 200]) == []
    assert lockout(lab(), LAB_LINKS, port='eth1', tag=100, force=True)


def test_uplink_is_free_when_the_host_port_is_tagged_or_has_no_address():
    assert lockout(lab(host_tag=10), LAB_LINKS, port='eth1', tag=100) == []
    links = dict(LAB_LINKS, ovs0={'kind': 'openvswitch'})
    assert lockout(lab(), links, port='eth1', tag=100) == []


def test_the_host_port_state_after_the_batch_counts():
    # The host port is tagged (forced) in the same batch: its untagged traffic is gone anyway.
    warnings = lockout(lab(), LAB_LINKS, ports=[{'port': 'ovs0', 'tag': 10, 'force': True}, {'port': 'eth1', 'tag': 10}])
    assert len(warnings) == 1
    # The host port is untagged in the same batch: the uplink now guards it.
    refused(lab(host_tag=10), LAB_LINKS, 'ports[1]: refusing', 'uplink',
            ports=[{'port': 'ovs0', 'tag': 0}, {'port': 'eth1', 'tag': 10}])


def test_container_vm_and_tap_ports_are_not_uplinks():
    assert lockout(lab(), LAB_LINKS, port='np1c2d3e4f5a6', tag=300) == []
    assert lockout(lab(), LAB_LINKS, port='vnet0', state='absent') == []
    bridges = lab(extra_ports={'vm1': {'interfaces': {'vm1': {'external_ids': {'iface-id': 'x'}}}},
                               'patch-a': {'interfaces': {'patch-a': {'type': 'patch'}}}})
    ovs = state(bridges)
    hst = host(dict(LAB_LINKS, vm1={'kind': 'veth'}))
    assert not is_uplink('vm1', ovs, hst) and not is_uplink('vnet0', ovs, hst)
    assert not is_uplink('ovs0', ovs, hst) and not is_uplink('np1c2d3e4f5a6', ovs, hst)
    assert is_uplink('patch-a', ovs, hst) and is_uplink('eth1', ovs, hst)


def test_every_refusal_is_reported_at_once():
    err = refused(lab(), LAB_LINKS, ports=[{'port': 'ovs0', 'tag': 1}, {'port': 'vnet0', 'tag': 2},
                                           {'port': 'eth1', 'tag': 3}])
    assert len(err.details['refused']) == 1  # eth1 is fine: ovs0 stops being untagged in the same batch
    links = dict(LAB_LINKS, eth1={'addrs': ['203.0.113.5/24']})
    err = refused(lab(), links, ports=[{'port': 'eth1', 'tag': 3}, {'port': 'ovs0', 'trunks': [5]}])
    assert [r.split(':')[0] for r in err.details['refused']] == ['ports[0]', 'ports[1]']


# ---- the runner (ovs_port_apply) with a fake ovs-vsctl ----------------------------------------

class FakeIpr:
    def close(self):
        pass


def runner(run, check_mode=False, links=None, monkeypatch=None, **kw):
    monkeypatch.setattr(ovs_port_apply, 'read_namespace', lambda ipr: host(links if links is not None else LAB_LINKS))
    return ovs_port_apply.Runner(params(**kw), check_mode, run, iproute_factory=FakeIpr,
                                 lock=contextlib.nullcontext)


def test_runner_check_mode_reads_once_and_writes_nothing(monkeypatch):
    run = FakeRun(lab())
    items = [{'port': 'vnet0', 'tag': 5}, {'port': 'eth2', 'tag': 6}]
    result = runner(run, True, monkeypatch=monkeypatch, bridge='ovs0', ports=items).run()
    assert result['changed'] and run.reads == 1 and run.writes == []
    assert [p['action'] for p in result['ports']] == ['updated', 'created']
    assert result['commands'][0] == ['set', 'Port', 'vnet0', 'tag=5']
    assert result['diff']['before']['ports']['eth2'] == {'state': 'absent'}
    assert result['diff']['after']['ports']['eth2']['tag'] == 6


def test_runner_applies_one_transaction_then_reads_back(monkeypatch):
    after = lab(extra_ports={'eth2': {'tag': 6}})
    run = FakeRun(lab(), after_write=after)
    items = [{'port': 'vnet0', 'tag': 5}, {'port': 'eth2', 'tag': 6}]
    result = runner(run, monkeypatch=monkeypatch, bridge='ovs0', ports=items).run()
    assert len(run.writes) == 1 and run.reads == 2
    assert run.writes[0] == result['commands']
    assert result['ports'][1] == {'name': 'eth2', 'bridge': 'ovs0', 'state': 'present', 'tag': 6, 'trunks': [],
                                  'vlan_mode': None, 'external_ids': OWNER, 'changed': True, 'action': 'created',
                                  'changes': ['add port eth2 to bridge ovs0 (tag 6)']}


def test_runner_no_change_writes_nothing(monkeypatch):
    run = FakeRun(lab())
    result = runner(run, monkeypatch=monkeypatch, port='vnet0', tag=200).run()
    assert not result['changed'] and run.writes == [] and result['commands'] == []
    assert result['ports'][0]['action'] == 'none'


def test_runner_rolls_back_when_ovs_cannot_open_an_added_interface(monkeypatch):
    after = lab(extra_ports={'npvmissing': {'tag': 6, 'interfaces': {'npvmissing': {
        'ofport': -1, 'error': 'could not open network device npvmissing (No such device)'}}}})
    run = FakeRun(lab(), after_write=after, write_err="ovs-vsctl: Error detected while setting up 'npvmissing'")
    with pytest.raises(PipeworkError) as err:
        runner(run, monkeypatch=monkeypatch, bridge='ovs0',
               ports=[{'port': 'vnet0', 'tag': 5}, {'port': 'npvmissing', 'tag': 6}]).run()
    assert 'npvmissing: could not open network device npvmissing (No such device)' in err.value.msg
    assert "rolled back this run's transaction" in err.value.msg
    assert len(run.writes) == 2
    assert run.writes[1] == [['--if-exists', 'del-port', 'npvmissing'], ['set', 'Port', 'vnet0', 'tag=200']]


def test_runner_transaction_refused_means_nothing_to_undo(monkeypatch):
    run = FakeRun(lab(), write_rc=1, write_err='ovs-vsctl: something refused\n')
    with pytest.raises(PipeworkError) as err:
        runner(run, monkeypatch=monkeypatch, port='vnet0', tag=5).run()
    assert 'Open vSwitch refused the change: ovs-vsctl: something refused' in err.value.msg
    assert len(run.writes) == 1


def test_runner_refuses_a_lockout_before_writing(monkeypatch):
    run = FakeRun(lab())
    with pytest.raises(PipeworkError):
        runner(run, monkeypatch=monkeypatch, port='ovs0', tag=5).run()
    assert run.writes == []


def test_runner_validates_before_reading(monkeypatch):
    run = FakeRun(lab())
    with pytest.raises(PipeworkError) as err:
        runner(run, monkeypatch=monkeypatch, port='vnet0', tag=5000).run()
    assert 'tag' in err.value.msg and run.reads == 0
