"""host_bridge_migrate's planning and argument lists, offline: host views are plain dicts."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import plan
from ansible_collections.netplumb.pipework.plugins.module_utils.bridge_migrate import revert as rollback
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

IP = '/usr/sbin/ip'
MAC = '08:00:27:aa:bb:cc'


def addr(address, prefixlen=24, family=4, label=None, flags=0x80, **extra):
    a = {'family': family, 'address': address, 'prefixlen': prefixlen, 'peer': None,
         'broadcast': None, 'label': label, 'scope': 0, 'flags': flags, 'valid_lft': None}
    a.update(extra)
    return a


def route(dst, gateway=None, dev='enp0s3', family=4, table=254, metric=0, **extra):
    r = {'family': family, 'table': table, 'dst': dst, 'src': None, 'tos': 0, 'gateway': gateway, 'dev': dev,
         'onlink': False, 'nexthops': None, 'metric': metric, 'proto': 3, 'scope': 0 if gateway else 253,
         'type': 1, 'prefsrc': None, 'pref': None, 'metrics': {}}
    r.update(extra)
    return r


def s1_addresses():
    return [addr('192.168.1.102', label='enp0s3'), addr('2001:db8::102', 64, family=6)]


def s1_routes(dev='enp0s3'):
    return [route('default', '192.168.1.1', dev=dev, metric=100),
            route('10.9.0.0/16', '192.168.1.1', dev=dev, table=100, prefsrc='192.168.1.102'),
            route('172.16.5.0/24', dev=dev, metric=20),
            route('default', '2001:db8::1', dev=dev, family=6, metric=1024, pref='medium')]


def unmigrated(bridge=None):
    return {
        'uplink': {'name': 'enp0s3', 'index': 2, 'mac': MAC, 'mtu': 1500, 'up': True, 'master': None},
        'bridge_name': 'br0', 'bridge_type': 'linux', 'bridge': bridge, 'enslaved': False,
        'uplink_addresses': s1_addresses(), 'bridge_addresses': [],
        'uplink_routes': s1_routes(), 'bridge_routes': [],
    }


def migrated():
    return {
        'uplink': {'name': 'enp0s3', 'index': 2, 'mac': MAC, 'mtu': 1500, 'up': True, 'master': 'br0'},
        'bridge_name': 'br0', 'bridge_type': 'linux',
        'bridge': {'name': 'br0', 'index': 5, 'mac': MAC, 'mtu': 1500, 'up': True},
        'enslaved': True, 'uplink_addresses': [], 'bridge_addresses': s1_addresses(),
        'uplink_routes': [], 'bridge_routes': s1_routes(dev='br0'),
    }


def original():
    return {'addresses': s1_addresses(), 'routes': s1_routes(), 'mtu': 1500, 'mac': MAC, 'up': True}


def ops(actions):
    return [a['op'] for a in actions]


# ---- bridge type ----

@pytest.mark.parametrize('requested,name,kind,exists,in_ovs,expected', [
    ('auto', 'br0', None, False, False, ('linux', False)),
    ('auto', 'ovs0', None, False, False, ('ovs', False)),
    ('auto', 'lan', 'bridge', True, False, ('linux', True)),
    ('auto', 'sw1', 'openvswitch', True, True, ('ovs', True)),
    ('linux', 'lan', None, False, False, ('linux', False)),
    ('ovs', 'br-int', None, False, False, ('ovs', False)),
    ('ovs', 'ovs0', 'tun', True, True, ('ovs', True)),
])
def test_bridge_type(requested, name, kind, exists, in_ovs, expected):
    assert plan.resolve_bridge_type(requested, name, kind, exists, in_ovs) == expected


@pytest.mark.parametrize('requested,name,kind,exists,in_ovs,words', [
    ('auto', 'lan0', None, False, False, 'only names starting with "br"'),
    ('linux', 'ovs0', 'openvswitch', True, True, 'is an Open vSwitch bridge, not linux'),
    ('ovs', 'br0', 'bridge', True, False, 'is a Linux bridge, not ovs'),
    ('auto', 'br0', 'veth', True, False, 'exists and is not a bridge (it is a veth interface)'),
])
def test_bridge_type_errors(requested, name, kind, exists, in_ovs, words):
    with pytest.raises(PipeworkError) as err:
        plan.resolve_bridge_type(requested, name, kind, exists, in_ovs)
    assert words in err.value.msg
    assert err.value.msg.startswith(('bridge:', 'bridge_type:'))


# ---- state=present ----

def test_present_fresh_order():
    """Bridge ready, addresses added, uplink enslaved, routes replaced (on-link first), then removal."""
    actions = plan.plan_present(unmigrated())
    assert ops(actions) == ['create_bridge', 'bridge_up', 'add_address', 'add_address', 'enslave',
                            'move_route', 'move_route', 'move_route', 'move_route', 'del_address', 'del_address']
    assert actions[0] == {'op': 'create_bridge', 'type': 'linux', 'datapath_type': 'system', 'mac': MAC, 'mtu': 1500}
    assert [a['addr']['address'] for a in actions if a['op'] == 'add_address'] == ['192.168.1.102', '2001:db8::102']
    assert all(a['dev'] == 'br0' for a in actions if a['op'] == 'add_address')
    moved = [a['route']['dst'] for a in actions if a['op'] == 'move_route']
    assert moved[0] == '172.16.5.0/24'  # the on-link route before the routes through a gateway
    # removal from the uplink: in reverse (secondaries before their primary)
    assert [a['addr']['address'] for a in actions if a['op'] == 'del_address'] == ['2001:db8::102', '192.168.1.102']
    assert all(a['dev'] == 'enp0s3' for a in actions if a['op'] == 'del_address')


def test_present_label_follows_device():
    view = unmigrated()
    view['uplink_addresses'].append(addr('192.168.1.103', label='enp0s3:1', flags=0x81))
    labels = [a['label'] for a in plan.plan_present(view) if a['op'] == 'add_address']
    assert labels == [None, None, 'br0:1']


def test_present_is_idempotent():
    assert plan.plan_present(migrated()) == []
    assert plan.is_migrated(migrated())
    assert not plan.is_migrated(unmigrated())


def test_present_completes_a_run_killed_half_way():
    """Killed after the addresses reached the bridge, before the uplink was enslaved."""
    view = unmigrated(bridge={'name': 'br0', 'index': 5, 'mac': MAC, 'mtu': 1500, 'up': True})
    view['bridge_addresses'] = [copy.deepcopy(s1_addresses()[0])]
    actions = plan.plan_present(view)
    assert ops(actions) == ['add_address', 'enslave', 'move_route', 'move_route', 'move_route', 'move_route',
                            'del_address', 'del_address']
    assert actions[0]['addr']['address'] == '2001:db8::102'


def test_present_completes_after_enslave():
    """Killed after enslaving and moving the default route: the rest moves, nothing is redone."""
    view = migrated()
    view['uplink_addresses'] = [s1_addresses()[0]]
    view['uplink_routes'] = [s1_routes()[1]]
    view['bridge_routes'] = [r for r in s1_routes(dev='br0') if r['dst'] != '10.9.0.0/16']
    assert ops(plan.plan_present(view)) == ['move_route', 'del_address']


def test_present_fixes_bridge_mac_mtu_and_state():
    view = migrated()
    view['bridge'].update(mac='02:00:00:00:00:01', mtu=1400, up=False)
    actions = plan.plan_present(view)
    assert actions == [{'op': 'set_bridge', 'mac': MAC, 'mtu': 1500}, {'op': 'bridge_up'}]


def test_present_brings_a_down_uplink_up():
    view = unmigrated()
    view['uplink']['up'] = False
    assert 'uplink_up' in ops(plan.plan_present(view))


def test_ovs_datapath_reaches_the_create_action():
    view = unmigrated()
    view['bridge_name'], view['bridge_type'] = 'ovs0', 'ovs'
    assert plan.plan_present(view, 'netdev')[0]['datapath_type'] == 'netdev'


# ---- state=absent ----

def test_absent_restores_in_order():
    actions = plan.plan_absent(migrated(), original())
    assert ops(actions) == ['add_address', 'add_address', 'release', 'move_route', 'move_route', 'move_route',
                            'move_route', 'del_address', 'del_address']
    assert all(a['dev'] == 'enp0s3' for a in actions if a['op'] == 'add_address')
    assert all(a['direction'] == 'to_uplink' for a in actions if a['op'] == 'move_route')
    assert all(a['dev'] == 'br0' for a in actions if a['op'] == 'del_address')


def test_absent_is_idempotent():
    view = unmigrated(bridge={'name': 'br0', 'index': 5, 'mac': MAC, 'mtu': 1500, 'up': True})
    assert plan.plan_absent(view, original()) == []


def test_absent_restores_mtu_mac_and_state():
    view = unmigrated()
    view['uplink'].update(mtu=9000, mac='02:00:00:00:00:09', up=False)
    assert plan.plan_absent(view, original()) == [{'op': 'set_uplink', 'mtu': 1500, 'mac': MAC, 'up': True}]


def test_absent_removes_a_left_over_bridge_copy():
    view = unmigrated(bridge={'name': 'br0', 'index': 5, 'mac': MAC, 'mtu': 1500, 'up': True})
    view['bridge_routes'] = [s1_routes(dev='br0')[0]]
    actions = plan.plan_absent(view, original())
    assert ops(actions) == ['del_route']


def test_absent_without_snapshot():
    assert plan.plan_absent(unmigrated(), None) == []
    view = migrated()
    with pytest.raises(PipeworkError) as err:
        plan.plan_absent(view, None)
    assert 'no snapshot' in err.value.msg and 'cut the host off' in err.value.msg
    view['uplink_addresses'], view['bridge_addresses'] = s1_addresses(), []
    assert ops(plan.plan_absent(view, None)) == ['release']


# ---- snapshot contents ----

def test_original_state_fresh_and_merged():
    fresh = plan.original_state(unmigrated())
    assert [a['address'] for a in fresh['addresses']] == ['192.168.1.102', '2001:db8::102']
    assert len(fresh['routes']) == 4 and fresh['mtu'] == 1500 and fresh['mac'] == MAC
    # a repair run: part of the addressing already moved, one address appeared on the uplink since
    view = migrated()
    view['uplink_addresses'] = [addr('192.168.1.104')]
    merged = plan.original_state(view, original())
    assert [a['address'] for a in merged['addresses']] == ['192.168.1.102', '2001:db8::102', '192.168.1.104']
    assert len(merged['routes']) == 4


def test_default_probe():
    assert plan.default_probe(unmigrated()) == '192.168.1.1'
    view = unmigrated()
    view['uplink_routes'] = [r for r in view['uplink_routes'] if r['family'] == 6]
    assert plan.default_probe(view) == '2001:db8::1'
    view['uplink_routes'] = []
    assert plan.default_probe(view) is None
    assert plan.default_probe(view, original()) == '192.168.1.1'
    view['uplink_routes'] = [route('default', nexthops=[{'gateway': '192.168.1.254', 'dev': 'enp0s3', 'weight': 1}],
                                   dev=None)]
    assert plan.default_probe(view) == '192.168.1.254'


# ---- diff ----

def test_simulated_after_matches_the_migrated_host():
    before = plan.summary(unmigrated())
    after = plan.simulate(before, plan.plan_present(unmigrated()))
    want = plan.summary(migrated())
    assert after['uplink']['master'] == 'br0' and after['uplink']['addresses'] == []
    assert sorted(after['bridge']['addresses']) == sorted(want['bridge']['addresses'])
    assert sorted(after['bridge']['routes']) == sorted(want['bridge']['routes'])
    assert after['bridge']['exists'] and after['bridge']['mac'] == MAC
    back = plan.simulate(plan.summary(migrated()), plan.plan_absent(migrated(), original()))
    assert sorted(back['uplink']['routes']) == sorted(plan.summary(unmigrated())['uplink']['routes'])
    assert back['uplink']['master'] is None and back['bridge']['addresses'] == []


def test_describe():
    r = s1_routes()[1]
    assert plan.describe_route(r) == '10.9.0.0/16 via 192.168.1.1 dev enp0s3 table 100 src 192.168.1.102'
    assert plan.describe_route(r, {'enp0s3': 'br0'}).startswith('10.9.0.0/16 via 192.168.1.1 dev br0')
    texts = [plan.describe(a, 'enp0s3', 'br0') for a in plan.plan_present(unmigrated())]
    assert texts[0] == 'create Linux bridge br0 with MAC %s and MTU 1500' % MAC
    assert 'make enp0s3 a port of bridge br0' in texts
    assert 'move route default via 192.168.1.1 dev enp0s3 metric 100 to br0' in texts


# ---- argument lists (shared by the change and the revert) ----

def test_addr_argv():
    a = addr('192.168.1.103', label='enp0s3:1', broadcast='192.168.1.255', flags=0x280)
    assert rollback.addr_argv(IP, 'add', a, 'br0', label='br0:1', nodad=True) == [
        IP, '-4', 'addr', 'add', '192.168.1.103/24', 'broadcast', '192.168.1.255', 'label', 'br0:1',
        'noprefixroute', 'dev', 'br0']
    v6 = addr('2001:db8::102', 64, family=6)
    assert rollback.addr_argv(IP, 'add', v6, 'br0', nodad=True) == [
        IP, '-6', 'addr', 'add', '2001:db8::102/64', 'nodad', 'dev', 'br0']
    assert rollback.addr_argv(IP, 'del', v6, 'enp0s3') == [
        IP, '-6', 'addr', 'del', '2001:db8::102/64', 'dev', 'enp0s3']
    ptp = addr('10.0.0.1', 32, peer='10.0.0.2')
    assert rollback.addr_argv(IP, 'del', ptp, 'enp0s3')[4:7] == ['10.0.0.1', 'peer', '10.0.0.2/32']


def test_route_argv():
    r = s1_routes()[1]
    r['metrics'] = {'mtu': 1400}
    assert rollback.route_argv(IP, 'replace', r, {'enp0s3': 'br0'}) == [
        IP, '-4', 'route', 'replace', '10.9.0.0/16', 'via', '192.168.1.1', 'dev', 'br0', 'table', '100',
        'metric', '0', 'proto', '3', 'scope', '0', 'src', '192.168.1.102', 'mtu', '1400']
    assert rollback.route_argv(IP, 'del', r) == [IP, '-4', 'route', 'del', '10.9.0.0/16', 'via', '192.168.1.1',
                                                 'dev', 'enp0s3', 'table', '100', 'metric', '0']
    v6 = s1_routes()[3]
    assert rollback.route_argv(IP, 'replace', v6)[-4:] == ['proto', '3', 'pref', 'medium']
    mp = route('default', dev=None, nexthops=[{'gateway': '192.168.1.1', 'dev': 'enp0s3', 'weight': 1},
                                              {'gateway': '10.0.0.1', 'dev': 'eth1', 'weight': 3, 'onlink': True}])
    assert rollback.route_argv(IP, 'replace', mp, {'enp0s3': 'br0'})[4:18] == [
        'default', 'nexthop', 'via', '192.168.1.1', 'dev', 'br0', 'nexthop', 'via', '10.0.0.1', 'dev', 'eth1',
        'weight', '3', 'onlink']


@pytest.mark.parametrize('label,expected', [
    (None, None), ('enp0s3', None), ('enp0s3:1', 'br0:1'), ('other', None), ('enp0s3:toolongalabel', None),
])
def test_renamed_label(label, expected):
    assert rollback.renamed_label(label, 'enp0s3', 'br0') == expected


def test_route_and_address_order():
    routes = s1_routes()
    assert [r['dst'] for r in rollback.route_order(routes)][0] == '172.16.5.0/24'
    assert rollback.address_order([1, 2, 3], removing=True) == [3, 2, 1]
