"""docker_veth against the real kernel, a real dockerd and the root OVS (throwaway netdev bridges)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.veth.spec import derive_host_ifname

from nphelpers import (REPO, can_ping, can_tcp, docker_exec, host_links, run, run_module, run_playbook,
                       run_task, scoped_state, suffix)

MODULE = 'netplumb.pipework.docker_veth'


def s2_attachments(names):
    vlans = [100, 100, 200, 200]
    return [{'container': n, 'address': '192.168.0.%d/24' % (i + 1), 'vlan': vlans[i]} for i, n in enumerate(names)]


@pytest.fixture
def four(containers):
    tag = suffix()
    return [containers.start('np%s-test%d' % (tag, i)) for i in range(1, 5)]


def ovs_port(name):
    out = run(['ovs-vsctl', '--format=json', '--columns=name,tag', 'find', 'Port', 'name=%s' % name]).stdout
    rows = json.loads(out)['data']
    return rows[0] if rows else None


def assert_s2_matrix(names):
    t1, t2, t3, t4 = names
    ip = dict((n, '192.168.0.%d' % (i + 1)) for i, n in enumerate(names))
    for a, b in ((t1, t2), (t2, t1), (t3, t4), (t4, t3)):
        assert can_ping(a, ip[b]), '%s should ping %s' % (a, b)
    assert can_tcp(t1, t2, ip[t2])
    assert can_tcp(t4, t3, ip[t3])
    for a, b in ((t1, t3), (t1, t4), (t2, t3), (t2, t4)):
        assert not can_ping(a, ip[b]), '%s must not reach %s across VLANs' % (a, b)
    assert not can_tcp(t1, t3, ip[t3])


def test_s2_playbook_isolation_idempotence_and_absent(four, ovs_bridge):
    """Acceptance 2: S2 through playbooks/single_host_vlan.yml; re-run changed=0; absent leaves nothing."""
    before = scoped_state(ovs_bridge, four)
    extra = {'ovs_vlan_bridge': ovs_bridge, 'ovs_vlan_datapath_type': 'netdev',
             'ovs_vlan_containers': s2_attachments(four)}
    playbook = os.path.join(REPO, 'playbooks', 'single_host_vlan.yml')

    rc, out, recap = run_playbook(playbook, extra, check=True)
    assert rc == 0, out
    assert recap['changed'] == 1, out
    assert scoped_state(ovs_bridge, four) == before, 'check mode changed the host'
    assert run(['ovs-vsctl', 'br-exists', ovs_bridge], check=False).returncode == 2, 'check mode created the bridge'

    rc, out, recap = run_playbook(playbook, extra)
    assert rc == 0, out
    assert recap['changed'] == 1
    assert_s2_matrix(four)

    rc, out, recap = run_playbook(playbook, extra)
    assert rc == 0, out
    assert recap['changed'] == 0, out

    ids = [run(['docker', 'inspect', '-f', '{{.Id}}', n]).stdout.strip() for n in four]
    ours = [derive_host_ifname(i, 'eth1') for i in ids]
    assert set(ours) <= set(host_links())
    extra['ovs_vlan_state'] = 'absent'
    rc, out, recap = run_playbook(playbook, extra)
    assert rc == 0, out
    assert not set(ours) & set(host_links())
    assert run(['ovs-vsctl', 'br-exists', ovs_bridge], check=False).returncode == 2
    for name in four:
        assert docker_exec(name, 'ip', 'link', 'show', 'eth1').returncode != 0
    stale = run(['ovs-vsctl', '--format=json', '--columns=name', 'find', 'Interface',
                 'external_ids:netplumb_owner="netplumb.pipework"']).stdout
    assert json.loads(stale)['data'] == []


def test_result_ovs_external_ids_and_tag_in_one_step(four, ovs_bridge):
    failed, res = run_module(MODULE, {'bridge': ovs_bridge, 'datapath_type': 'netdev',
                                      'attachments': s2_attachments(four[:2])})
    assert not failed, res
    item = res['attachments'][0]
    assert item['action'] == 'created'
    assert item['container'] == four[0] and len(item['container_id']) == 64
    assert item['bridge_type'] == 'ovs' and item['vlan'] == 100
    assert len(item['host_ifname']) <= 15
    assert item['addresses'] == ['192.168.0.1/24']
    ids = run(['ovs-vsctl', 'get', 'Interface', item['host_ifname'], 'external_ids']).stdout
    assert 'container_id=%s' % item['container_id'] in ids.replace('"', '')
    assert 'container_iface=eth1' in ids.replace('"', '')
    assert ovs_port(item['host_ifname'])[1] == 100
    mac = docker_exec(four[0], 'cat', '/sys/class/net/eth1/address').stdout.strip()
    assert mac == item['mac']


def test_update_in_place_and_diff(four, ovs_bridge):
    name = four[0]
    args = {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev',
            'address': ['10.20.0.2/24'], 'vlan': 10}
    failed, res = run_module(MODULE, args)
    assert not failed, res
    host_ifname = res['attachments'][0]['host_ifname']
    args.update(address=['10.20.0.3/24', 'fd00:20::3/64'], vlan=20, mtu=1400, mac='02:aa:bb:cc:dd:01',
                routes=[{'dest': '10.99.0.0/16', 'via': '10.20.0.1'}], gateway='10.20.0.1')
    failed, res = run_module(MODULE, args, check=True, diff=True)
    assert not failed and res['changed'] and res['attachments'][0]['action'] == 'updated'
    assert docker_exec(name, 'ip', 'addr', 'show', 'eth1').stdout.count('10.20.0.2/24') == 1, 'check mode changed it'
    failed, res = run_task(MODULE, args, diff=True)
    assert not failed, res
    item = res['attachments'][0]
    assert item['action'] == 'updated' and item['host_ifname'] == host_ifname
    assert res['diff']['before']['attachments'][0]['vlan'] == 10
    assert res['diff']['after']['attachments'][0]['vlan'] == 20
    addr = docker_exec(name, 'ip', 'addr', 'show', 'eth1').stdout
    assert '10.20.0.3/24' in addr and '10.20.0.2/24' not in addr and 'fd00:20::3/64' in addr
    assert 'mtu 1400' in addr and '02:aa:bb:cc:dd:01' in addr
    assert 'mtu 1400' in run(['ip', 'link', 'show', host_ifname]).stdout, 'MTU must be set on both ends'
    routes = docker_exec(name, 'ip', 'route').stdout
    assert 'default via 10.20.0.1 dev eth1' in routes and '10.99.0.0/16 via 10.20.0.1 dev eth1' in routes
    assert ovs_port(host_ifname)[1] == 20
    failed, res = run_module(MODULE, args)
    assert not failed and not res['changed'], res
    # Clearing: gateway '' removes the default route, routes [] the extra routes, vlan 0 the tag.
    args.update(gateway='', routes=[], vlan=0)
    failed, res = run_module(MODULE, args)
    assert not failed and res['changed'], res
    routes = docker_exec(name, 'ip', 'route').stdout
    assert 'default' not in routes and '10.99.0.0' not in routes
    assert ovs_port(host_ifname)[1] == ['set', []]


def test_gateway_replaces_existing_default_and_reports_it(containers, ovs_bridge):
    name = containers.start('np%s-gw' % suffix())
    base = {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev'}
    failed, res = run_module(MODULE, dict(base, ifname='eth1', address=['10.30.0.2/24'], gateway='10.30.0.1'))
    assert not failed, res
    failed, res = run_module(MODULE, dict(base, ifname='eth2', address=['10.31.0.2/24'], gateway='10.31.0.1'))
    assert not failed, res
    assert res['attachments'][0]['replaced_default_routes'] == ['default via 10.30.0.1 dev eth1']
    assert 'default via 10.31.0.1 dev eth2' in docker_exec(name, 'ip', 'route').stdout


def test_linux_bridge_in_a_host_namespace(containers):
    """A Linux bridge in a throwaway 'host' namespace (root's FORWARD is Docker's DROP; br_netfilter is on)."""
    host = 'np-vethhost-%s' % suffix()
    run(['ip', 'netns', 'add', host])
    try:
        a = containers.start('np%s-la' % suffix())
        b = containers.start('np%s-lb' % suffix())
        args = {'bridge': 'brnp0', 'bridge_address': '10.40.0.1/24', 'attachments': [
            {'container': a, 'address': ['10.40.0.2/24'], 'gateway': '10.40.0.1'},
            {'container': b, 'address': ['10.40.0.3/24'], 'gateway': '10.40.0.1'}]}
        failed, res = run_module(MODULE, args, netns=host)
        assert not failed, res
        assert res['bridges']['brnp0'] == {'type': 'linux', 'created': True,
                                           'changes': ['create linux bridge brnp0', 'add address 10.40.0.1/24 to bridge brnp0']}
        assert can_ping(a, '10.40.0.3') and can_tcp(a, b, '10.40.0.3')
        assert can_ping(b, '10.40.0.1'), 'the bridge address is the gateway'
        failed, res = run_module(MODULE, args, netns=host)
        assert not failed and not res['changed'], res
        failed, res = run_module(MODULE, {'bridge': 'brnp0', 'container': a, 'vlan': 5}, netns=host)
        assert failed and 'vlan 5 needs an Open vSwitch bridge' in res['msg']
    finally:
        run(['ip', 'netns', 'del', host], check=False)


def test_recreated_container_is_a_new_attachment_and_old_port_is_purged(containers, ovs_bridge):
    name = containers.start('np%s-re' % suffix())
    args = {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev', 'address': ['10.50.0.2/24'], 'vlan': 7}
    failed, res = run_module(MODULE, args)
    assert not failed, res
    old = res['attachments'][0]['host_ifname']
    containers.remove(name)
    containers.start(name)
    failed, res = run_module(MODULE, args)
    assert not failed, res
    item = res['attachments'][0]
    assert item['action'] == 'created' and item['host_ifname'] != old
    assert any('purge stale port %s' % old in c for c in item['changes'])
    assert ovs_port(old) is None


def test_rerun_after_container_restart_passes_traffic_again(containers, ovs_bridge):
    """A restart kills the veth but OVS keeps the row; the re-run must bring a WORKING port back."""
    a = containers.start('np%s-ra' % suffix())
    b = containers.start('np%s-rb' % suffix())
    args = {'bridge': ovs_bridge, 'datapath_type': 'netdev', 'attachments': [
        {'container': a, 'address': ['10.55.0.2/24'], 'vlan': 9},
        {'container': b, 'address': ['10.55.0.3/24'], 'vlan': 9}]}
    failed, res = run_module(MODULE, args)
    assert not failed, res
    run(['docker', 'restart', '-t', '0', a])
    assert docker_exec(a, 'ip', 'link', 'show', 'eth1').returncode != 0
    failed, res = run_module(MODULE, args)
    assert not failed, res
    # 'recreated' when the kernel has not yet destroyed the old namespace's veth (that happens later).
    assert res['attachments'][0]['action'] in ('created', 'recreated') and res['attachments'][1]['action'] == 'none'
    assert can_ping(b, '10.55.0.2') and can_tcp(b, a, '10.55.0.2')


def test_absent_after_docker_rm_purges_leftovers(containers, ovs_bridge):
    name = containers.start('np%s-gone' % suffix())
    failed, res = run_module(MODULE, {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev',
                                      'address': ['10.60.0.2/24']})
    assert not failed, res
    host_ifname = res['attachments'][0]['host_ifname']
    containers.remove(name)
    assert ovs_port(host_ifname) is not None, 'OVS keeps the row after the container died'
    failed, res = run_module(MODULE, {'container': name, 'state': 'absent'})
    assert not failed and res['changed'], res
    assert ovs_port(host_ifname) is None
    failed, res = run_module(MODULE, {'container': name, 'state': 'absent'})
    assert not failed and not res['changed'], res


def test_system_datapath_fails_with_ovs_error_and_rolls_back(containers):
    """Acceptance 4: no openvswitch kernel module here; the module must not report a silent success."""
    bridge = 'ovsnp' + suffix()
    name = containers.start('np%s-sys' % suffix())
    before = scoped_state(bridge, [name])
    try:
        failed, res = run_module(MODULE, {'container': name, 'bridge': bridge, 'address': ['10.70.0.2/24'], 'vlan': 3})
        assert failed
        assert 'Open vSwitch could not bring up' in res['msg'] and 'Error detected while setting up' in res['msg']
        assert scoped_state(bridge, [name]) == before
        assert docker_exec(name, 'ip', 'link', 'show', 'eth1').returncode != 0
    finally:
        run(['ovs-vsctl', '--if-exists', 'del-br', bridge], check=False)


BAD_INPUTS = [
    ({'container': 'np-no-such-container', 'bridge': 'ovsnpx'}, "no container named or with ID 'np-no-such-container'"),
    ({'address': ['10.0.0.300/24']}, "address: '10.0.0.300/24' is not a valid CIDR address"),
    ({'address': ['10.0.0.2']}, "address: '10.0.0.2' is not an address in CIDR form"),
    ({'address': ['10.0.0.2/24'], 'gateway': '10.9.9.1'}, 'gateway: gateway 10.9.9.1 is outside the subnet of 10.0.0.2/24'),
    ({'vlan': 5000}, 'vlan: VLAN 5000 is out of range (1-4094)'),
    ({'bridge': 'brnpvlan', 'bridge_type': 'linux', 'vlan': 100}, 'vlan: vlan 100 needs an Open vSwitch bridge'),
    ({'bridge': 'nptypo0'}, "bridge: bridge 'nptypo0' does not exist, and with bridge_type=auto"),
    ({'ifname': 'a-very-long-ifname0'}, "ifname: interface name 'a-very-long-ifname0' is 19 bytes"),
    ({'ifname': 'eth/1'}, "ifname: interface name 'eth/1' contains"),
    ({'ifname': 'eth 1'}, "ifname: interface name 'eth 1' contains"),
    ({'mtu': 10}, 'mtu: MTU 10 is out of range'),
    ({'mac': '01:00:5e:00:00:01'}, "mac: '01:00:5e:00:00:01' is a multicast MAC address"),
    ({'host_ifname': '-npbad'}, "host_ifname: interface name '-npbad' starts with \"-\""),
]


@pytest.mark.parametrize('override,message', BAD_INPUTS, ids=[m[:40] for dummy, m in BAD_INPUTS])
def test_bad_input_fails_early_and_changes_nothing(containers, ovs_bridge, override, message):
    name = containers.start('np%s-bad' % suffix())
    args = {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev'}
    args.update(override)
    before = scoped_state(args['bridge'], [name])
    failed, res = run_module(MODULE, args)
    assert failed
    assert message in res['msg']
    assert scoped_state(args['bridge'], [name]) == before
    assert docker_exec(name, 'ip', 'link', 'show', 'eth1').returncode != 0


def test_stopped_container_is_refused(containers, ovs_bridge):
    name = containers.start('np%s-stop' % suffix())
    run(['docker', 'stop', '-t', '0', name])
    failed, res = run_module(MODULE, {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev'})
    assert failed and "container %r is not running (status exited)" % name in res['msg']


def test_duplicate_host_ifname_in_one_batch_is_refused(four, ovs_bridge):
    before = scoped_state(ovs_bridge, four), 'npdup0' in host_links()
    failed, res = run_module(MODULE, {'bridge': ovs_bridge, 'datapath_type': 'netdev', 'attachments': [
        {'container': four[0], 'host_ifname': 'npdup0'}, {'container': four[1], 'host_ifname': 'npdup0'}]})
    assert failed and "attachments[1].host_ifname: host_ifname 'npdup0' is also used by attachments[0]" in res['msg']
    assert (scoped_state(ovs_bridge, four), 'npdup0' in host_links()) == before


def test_failure_late_in_batch_rolls_back_everything(four, ovs_bridge):
    """The kernel refuses item 3 while applying (a route via an unreachable next hop): items 0-2 are undone."""
    items = s2_attachments(four)
    items[3] = {'container': four[3], 'vlan': 200, 'routes': [{'dest': '10.99.0.0/16', 'via': '172.31.0.1'}]}
    before = scoped_state(ovs_bridge, four)
    failed, res = run_module(MODULE, {'bridge': ovs_bridge, 'datapath_type': 'netdev', 'attachments': items})
    assert failed and 'attachments[3]' in res['msg'] and 'rolled back' in res['msg'], res
    assert scoped_state(ovs_bridge, four) == before
    for name in four:
        assert docker_exec(name, 'ip', 'link', 'show', 'eth1').returncode != 0


def test_existing_foreign_ifname_in_container_is_refused(containers, ovs_bridge):
    name = containers.start('np%s-dum' % suffix())
    pid = run(['docker', 'inspect', '-f', '{{.State.Pid}}', name]).stdout.strip()
    run(['nsenter', '-t', pid, '-n', 'ip', 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p'])
    before = scoped_state(ovs_bridge, [name])
    failed, res = run_module(MODULE, {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev'})
    assert failed and "ifname: 'eth1' already exists in container" in res['msg'], res
    assert scoped_state(ovs_bridge, [name]) == before


def test_explicit_host_ifname_never_deletes_a_foreign_interface(containers, ovs_bridge):
    name = containers.start('np%s-fh' % suffix())
    dummy = 'npdum' + suffix()
    run(['ip', 'link', 'add', dummy, 'type', 'bridge'])
    try:
        failed, res = run_module(MODULE, {'container': name, 'bridge': ovs_bridge, 'datapath_type': 'netdev',
                                          'host_ifname': dummy})
        assert failed and 'exists on the host and is not a veth' in res['msg'], res
        assert dummy in host_links()
    finally:
        run(['ip', 'link', 'del', dummy], check=False)


def test_module_docs_render():
    out = subprocess.run([os.path.join(REPO, '.build', 'venv', 'bin', 'ansible-doc'), MODULE], check=False,
                         capture_output=True, text=True, env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, '.build', 'collections')))
    assert out.returncode == 0 and 'attachments' in out.stdout and 'replaced_default_routes' in out.stdout
