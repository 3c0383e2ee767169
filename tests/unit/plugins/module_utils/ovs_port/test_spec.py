"""ovs_vlan_port input validation: every bad value fails before anything is read, naming option and value."""

from __future__ import annotations

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.ovs_port.spec import (
    ARGUMENT_SPEC, ITEM_OPTIONS, build_ports)


def params(**kw):
    out = dict((k, None) for k in ARGUMENT_SPEC)
    out['timeout'] = 30
    out.update(kw)
    return out


def item(**kw):
    out = dict((k, None) for k in ITEM_OPTIONS)
    out.update(kw)
    return out


def fails(p, *words):
    with pytest.raises(PipeworkError) as err:
        build_ports(p)
    for w in words:
        assert w in err.value.msg, err.value.msg
    return err.value.msg


def test_single_port_unset_options_stay_unmanaged():
    (w,) = build_ports(params(port='eth1'))
    assert (w.port, w.bridge, w.state, w.force) == ('eth1', None, 'present', False)
    assert w.tag is None and w.trunks is None and w.vlan_mode is None and w.external_ids is None
    assert w.datapath_type is None and not w.datapath_explicit and not w.manages_vlan
    assert w.label == 'ovs_vlan_port' and w.opt('tag') == 'tag'


def test_clearing_values_are_kept_apart_from_unset():
    (w,) = build_ports(params(port='eth1', tag=0, trunks=[], external_ids={'a': None}))
    assert w.tag == 0 and w.trunks == [] and w.external_ids == {'a': None} and w.manages_vlan


def test_trunks_are_sorted_and_external_ids_stringified():
    (w,) = build_ports(params(port='eth1', trunks=[300, 100], external_ids={'n': 5, 'b': True, 'f': False, 's': 'x'}))
    assert w.trunks == [100, 300]
    assert w.external_ids == {'n': '5', 'b': 'true', 'f': 'false', 's': 'x'}


def test_top_level_values_are_defaults_for_items():
    ws = build_ports(params(bridge='ovs0', tag=100, force=True, external_ids={'a': '1'}, ports=[
        item(port='p1'),
        item(port='p2', tag=200, bridge='ovs1', external_ids={'b': '2'}),
        item(port='p3', tag=0, force=False),
    ]))
    assert [(w.port, w.bridge, w.tag, w.force) for w in ws] == [
        ('p1', 'ovs0', 100, True), ('p2', 'ovs1', 200, True), ('p3', 'ovs0', 0, False)]
    assert ws[0].external_ids == {'a': '1'}
    assert ws[1].external_ids == {'b': '2'}  # replaced, not merged
    assert ws[2].label == 'ports[2]' and ws[2].opt('tag') == 'ports[2].tag'


def test_item_empty_trunks_overrides_a_top_level_list():
    ws = build_ports(params(trunks=[10], vlan_mode='trunk', ports=[item(port='p1', trunks=[]), item(port='p2')]))
    assert ws[0].trunks == [] and ws[1].trunks == [10]


def test_empty_ports_list_is_nothing_to_do():
    assert build_ports(params(ports=[])) == []


@pytest.mark.parametrize('tag', [5000, 4095, -1, True])
def test_bad_tag(tag):
    fails(params(port='eth1', tag=tag), 'tag', repr(tag), '1-4094')


def test_bad_tag_in_an_item_names_the_item():
    fails(params(ports=[item(port='a'), item(port='b', tag=5000)]), 'ports[1].tag', '5000')


@pytest.mark.parametrize('vid', [0, 4095, 5000, -3])
def test_bad_trunk(vid):
    fails(params(port='eth1', trunks=[10, vid]), 'trunks', repr(vid), '1-4094')


def test_duplicate_trunk():
    fails(params(port='eth1', trunks=[10, 10]), 'trunks', '[10, 10]', 'more than once')


def test_unknown_vlan_mode():
    fails(params(port='eth1', vlan_mode='hybrid'), 'vlan_mode', "'hybrid'")


@pytest.mark.parametrize('name, words', [
    ('a' * 16, ['16 bytes', 'at most 15']),
    ('a/b', ['"/"']),
    ('a b', ['white space']),
    ('a:b', ['":"']),
    ('-x', ['starts with "-"']),
    ('', ['empty']),
    ('..', ['not allowed']),
])
def test_port_name_rules(name, words):
    fails(params(port=name), 'port', *words)


def test_bridge_name_rules():
    fails(params(port='eth1', bridge='--help'), 'bridge', "'--help'", 'option')
    fails(params(port='eth1', bridge='x' * 20), 'bridge', 'at most 15')


@pytest.mark.parametrize('dp', ['-netdev', 'net dev', '', 'a;b'])
def test_bad_datapath_type(dp):
    fails(params(port='eth1', bridge='ovs0', datapath_type=dp), 'datapath_type', repr(dp))


def test_option_like_database_socket():
    fails(params(port='eth1', database_socket='--db=x'), 'database_socket', "'--db=x'")


def test_timeout_must_be_positive():
    fails(params(port='eth1', timeout=0), 'timeout', '0')


@pytest.mark.parametrize('ids, words', [
    ({'': 'x'}, ["key ''"]),
    ({'a': ['x']}, ["'a'", "['x']"]),
    ({'a': {'b': 'c'}}, ["'a'"]),
    ({'a\nb': 'x'}, ['control characters']),
    ({'a': 'x\ny'}, ['control characters']),
    ('a=b', ["'a=b'", 'not a dict']),
])
def test_bad_external_ids(ids, words):
    fails(params(port='eth1', external_ids=ids), 'external_ids', *words)


def test_external_ids_keys_with_punctuation_are_fine():
    (w,) = build_ports(params(port='eth1', external_ids={'k8s.ovn.org/x:y': 'v', '-dash': 'v'}))
    assert w.external_ids == {'k8s.ovn.org/x:y': 'v', '-dash': 'v'}


def test_trunks_with_access_and_tag_with_trunk_conflict():
    fails(params(port='eth1', vlan_mode='access', trunks=[10]), 'trunks', '[10]', 'access')
    fails(params(port='eth1', vlan_mode='trunk', tag=10), 'tag', '10', 'trunk')
    # tag 0 (clear) with trunk mode, and an empty trunks list with access, are fine
    build_ports(params(port='eth1', vlan_mode='trunk', tag=0))
    build_ports(params(port='eth1', vlan_mode='access', trunks=[]))


def test_port_and_ports_are_exclusive_and_one_is_needed():
    fails(params(port='a', ports=[item(port='b')]), 'ports', "'a'")
    fails(params(), 'give port')
    fails(params(ports=[item(tag=5)]), 'ports[0]', 'port is required')


def test_a_port_appears_once():
    fails(params(ports=[item(port='a', tag=1), item(port='b'), item(port='a', tag=2)]),
          'ports[2].port', "'a'", 'ports[0]')


def test_unknown_state():
    fails(params(port='a', state='gone'), 'state', "'gone'")


def test_spec_shape():
    assert set(ITEM_OPTIONS) == {'port', 'bridge', 'tag', 'trunks', 'vlan_mode', 'external_ids', 'state',
                                 'datapath_type', 'force'}
    assert ARGUMENT_SPEC['ports']['options'] is ITEM_OPTIONS
    assert ARGUMENT_SPEC['timeout'] == {'type': 'int', 'default': 30}
    assert all('default' not in spec for spec in ITEM_OPTIONS.values())  # unset means unmanaged
