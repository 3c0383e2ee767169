"""docker_veth option handling: defaults, validation messages, name derivation, batch conflicts."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import (
    ARGUMENT_SPEC, ITEM_OPTIONS, build_attachments, check_batch, derive_host_ifname)


def params(**kwargs):
    base = dict((k, None) for k in ARGUMENT_SPEC)
    base.update(kwargs)
    return base


def test_derived_host_ifname_is_stable_short_and_distinct():
    a = derive_host_ifname('c' * 64, 'eth1')
    assert a == derive_host_ifname('c' * 64, 'eth1')
    assert len(a.encode()) <= 15 and a.startswith('np')
    assert a != derive_host_ifname('c' * 64, 'eth2')
    assert a != derive_host_ifname('d' * 64, 'eth1')


def test_top_level_options_are_defaults_for_items_and_items_win():
    atts = build_attachments(params(bridge='ovs0', vlan=100, attachments=[
        {'container': 'a'}, {'container': 'b', 'vlan': 200, 'bridge': None}]))
    assert [a.vlan for a in atts] == [100, 200]
    assert [a.bridge for a in atts] == ['ovs0', 'ovs0']
    assert [a.label for a in atts] == ['attachments[0]', 'attachments[1]']
    assert atts[0].ifname == 'eth1' and atts[0].state == 'present' and atts[0].bridge_type == 'auto'
    assert atts[0].datapath_type == 'system'


def test_item_spec_matches_top_level_spec():
    for name, spec in ITEM_OPTIONS.items():
        assert ARGUMENT_SPEC[name] == spec


@pytest.mark.parametrize('kwargs,message', [
    (dict(bridge='ovs0'), 'give one of container, netns, pid'),
    (dict(container='a', netns='b', bridge='ovs0'), 'give exactly one of container, netns or pid (got container, netns)'),
    (dict(container='a', bridge='ovs0', attachments=[{'container': 'b'}]), 'attachments: cannot be combined with a top-level container'),
    (dict(container='a'), 'bridge is required with state=present'),
    (dict(container='-a', bridge='ovs0'), "container: '-a' starts with \"-\""),
    (dict(pid=0, bridge='ovs0'), 'pid 0 is not a process ID'),
    (dict(container='a', bridge='ovs0', address=['10.0.0.1/24', '10.0.0.1/24']), 'lists'),
    (dict(container='a', bridge='ovs0', address=['10.0.0.0/24']), 'is a network address'),
    (dict(container='a', bridge='ovs0', address=['10.0.0.2/24'], gateway='10.0.0.2'), "the interface's own address"),
    (dict(container='a', bridge='ovs0', address=['fd00::2/64'], gateway='10.0.0.1'), 'has no address of IPv4'),
    (dict(container='a', bridge='ovs0', gateway='10.0.0'), "gateway: '10.0.0' is not an IP address"),
    (dict(container='a', bridge='ovs0', routes=[{'dest': 'default', 'via': '10.0.0.1'}]), 'use gateway for the default route'),
    (dict(container='a', bridge='ovs0', routes=[{'dest': '10.1.0.0/16', 'via': 'fd00::1'}]), 'is not of the family'),
    (dict(container='a', bridge='ovs0', address=['10.0.0.2/24'], routes=[{'dest': '10.1.0.0/16', 'via': '10.9.0.1'}]),
     'routes.via: gateway 10.9.0.1 is outside the subnet'),
    (dict(container='a', bridge='ovs0', vlan=4095), 'vlan: VLAN 4095 is out of range (1-4094)'),
    (dict(container='a', bridge='ovs0', vlan=-1), 'VLAN -1 is out of range'),
    (dict(container='a', bridge='br0', bridge_type='linux', vlan=10), 'needs an Open vSwitch bridge'),
    (dict(container='a', bridge='ovs0', mtu=70000), 'MTU 70000 is out of range'),
    (dict(container='a', bridge='ovs0', mac='zz:00:00:00:00:00'), 'is not a MAC address'),
    (dict(container='a', bridge='ovs/0'), "bridge: interface name 'ovs/0' contains"),
    (dict(container='a', bridge='ovs0', ifname='..'), "interface name '..' is not allowed"),
    (dict(container='a', bridge='ovs0', datapath_type='net dev'), 'is not a datapath type name'),
    (dict(container='a', bridge='ovs0', bridge_address='172.17.0.1'), 'bridge_address: \'172.17.0.1\' is not an address in CIDR form'),
])
def test_bad_input_names_option_and_value(kwargs, message):
    with pytest.raises(PipeworkError) as err:
        build_attachments(params(**kwargs))
    assert message in err.value.msg


def test_item_errors_name_the_item():
    with pytest.raises(PipeworkError) as err:
        build_attachments(params(bridge='ovs0', attachments=[{'container': 'a'}, {'container': 'b', 'vlan': 5000}]))
    assert err.value.msg.startswith('attachments[1].vlan: VLAN 5000')


def test_clear_values():
    (a,) = build_attachments(params(container='a', bridge='ovs0', gateway='', address=[], routes=[], vlan=0))
    assert a.clear_gateway and a.gateway is None
    assert a.addresses == [] and a.routes == [] and a.vlan == 0


def test_unset_means_unmanaged():
    (a,) = build_attachments(params(container='a', bridge='ovs0'))
    assert a.addresses is None and a.routes is None and a.vlan is None and a.gateway is None
    assert a.mac is None and a.mtu is None and not a.clear_gateway


def test_addresses_are_parsed_both_families():
    (a,) = build_attachments(params(container='a', bridge='ovs0', address=['10.0.0.2/24', 'fd00::2/64'],
                                    gateway='fd00::1'))
    assert a.addresses == [ipaddress.ip_interface('10.0.0.2/24'), ipaddress.ip_interface('fd00::2/64')]
    assert a.gateway == ipaddress.ip_address('fd00::1')


def test_absent_needs_no_bridge():
    (a,) = build_attachments(params(container='a', state='absent'))
    assert a.bridge is None


def test_batch_conflicts():
    atts = build_attachments(params(bridge='ovs0', attachments=[{'container': 'a'}, {'container': 'b'}]))
    atts[0].set_identity('id-a')
    atts[1].set_identity('id-a')
    with pytest.raises(PipeworkError) as err:
        check_batch(atts)
    assert "host_ifname" in err.value.msg and 'attachments[0]' in err.value.msg
    atts = build_attachments(params(bridge='ovs0', attachments=[
        {'container': 'a', 'host_ifname': 'npx1'}, {'container': 'a', 'host_ifname': 'npx2'}]))
    atts[0].set_identity('id-a')
    atts[1].set_identity('id-a')
    with pytest.raises(PipeworkError) as err:
        check_batch(atts)
    assert "already gets ifname 'eth1'" in err.value.msg
