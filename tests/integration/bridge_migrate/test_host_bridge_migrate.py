"""host_bridge_migrate against the real kernel, in throwaway namespaces: a 'host' whose uplink is a veth into
a 'LAN' namespace holding the gateway (and a LAN client address). Linux bridge and Open vSwitch (a private
ovsdb-server/ovs-vswitchd with the userspace datapath, inside the host namespace).

Some tests go through ansible-playbook (connection local, run under `ip netns exec`), so Ansible really
deletes the module's temporary files while the revert is armed; they use Debian's python3 with pyroute2 0.7.
The others run the module file directly with the venv's python (pyroute2 0.9).
"""

from __future__ import annotations

import os

import pytest

import bm_lab
from bm_lab import GW_V4, HOST_V4, HOST_V4_2, HOST_V6, MODULE, Lab, direct, sh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (network namespaces)')


@pytest.fixture
def lab(request):
    lab = Lab(**getattr(request, 'param', {})).up()
    yield lab
    lab.down()


def revert_alive(record):
    return bool(record and record.get('pid')) and _is_revert(record['pid'], record['token'])


def _is_revert(pid, token):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return token.encode() in f.read().split(b'\0')
    except (IOError, OSError):
        return False


def assert_reachable(lab, v6=True):
    assert lab.ping(HOST_V4), 'the LAN does not reach the host at %s' % HOST_V4
    assert lab.tcp(HOST_V4), 'no TCP exchange with the host at %s' % HOST_V4
    if v6:
        assert lab.ping(HOST_V6), 'the LAN does not reach the host at %s' % HOST_V6
        assert lab.tcp(HOST_V6)


def assert_same(before, after):
    for key in before:
        assert before[key] == after[key], '%s differs:\nbefore %s\nafter  %s' % (key, before[key], after[key])


def migrate_task(lab, register, **args):
    params = {'uplink': lab.uplink}
    if lab.db:
        params['database_socket'] = lab.db
    params.update(args)
    return {'name': 'migrate %s' % register, MODULE: params, 'register': register}


def confirm_tasks(lab, bridge, register='confirmed'):
    """What the roles do: reconnect, wait for the host, confirm over the new connection."""
    return [{'name': 'reconnect', 'ansible.builtin.meta': 'reset_connection'},
            {'name': 'wait for the host', 'ansible.builtin.wait_for_connection': {'timeout': 20}},
            migrate_task(lab, register, bridge=bridge, confirm=True)]


# ---- Linux bridge, through ansible-playbook (S1) -----------------------------------------------------

@pytest.mark.parametrize('lab', [{'uplink': 'enp0s3'}], indirect=True, ids=['enp0s3'])
def test_linux_bridge_migrate_confirm_rerun_absent(lab):
    """S1 with the uplink named enp0s3: check mode touches nothing; migrate, re-run while armed, reconnect,
    confirm; the LAN reaches the host (ping, TCP, IPv4 and IPv6); a second run changes nothing; absent
    restores the uplink exactly."""
    before = lab.dump('enp0s3')

    rc, out, res = lab.play([migrate_task(lab, 'm', bridge='br0')], check=True, diff=True)
    assert rc == 0, out
    assert res['m']['changed'] and res['m']['rollback']['status'] == 'would_arm'
    assert 'make enp0s3 a port of bridge br0' in res['m']['actions']
    assert res['m']['diff']['after']['bridge']['addresses'] == [HOST_V4 + '/24', HOST_V4_2 + '/24', HOST_V6 + '/64']
    assert not lab.bridge_exists('br0') and lab.records() == []
    assert_same(before, lab.dump('enp0s3'))

    tasks = [migrate_task(lab, 'm', bridge='br0', rollback_timeout=120),
             migrate_task(lab, 'again', bridge='br0', rollback_timeout=120)] + confirm_tasks(lab, 'br0')
    rc, out, res = lab.play(tasks)
    assert rc == 0, out
    m, again, confirmed = res['m'], res['again'], res['confirmed']
    assert m['changed'] and m['rollback']['status'] == 'armed' and m['probe']['result'] == 'ok', m
    assert m['probe']['address'] == GW_V4
    assert sorted(m['moved_addresses']) == sorted([HOST_V4 + '/24', HOST_V4_2 + '/24', HOST_V6 + '/64'])
    assert 'default via %s dev br0 metric 50' % GW_V4 in m['moved_routes']
    assert '10.9.0.0/16 via %s dev br0 table 100 src %s' % (GW_V4, HOST_V4) in m['routes']
    # a re-run while armed reports it and leaves it armed
    assert not again['changed'] and again['rollback']['status'] == 'armed'
    assert again['token'] == m['token'] and again['rollback']['pid'] == m['rollback']['pid']
    assert confirmed['changed'] and confirmed['rollback']['status'] == 'confirmed'
    assert not _is_revert(m['rollback']['pid'], m['token']), 'confirm left the revert running'

    assert lab.global_addresses('enp0s3') == []
    assert lab.global_addresses('br0') == sorted([HOST_V4 + '/24', HOST_V4_2 + '/24', HOST_V6 + '/64'])
    assert lab.link('enp0s3').get('master') == 'br0'
    assert lab.link('br0')['address'] == lab.mac and lab.link('br0')['mtu'] == 1400
    table100 = bm_lab.ipj(lab.host, 'route', 'show', 'table', '100')
    assert table100 and table100[0]['dev'] == 'br0' and table100[0]['prefsrc'] == HOST_V4
    assert_reachable(lab)

    rc, out, res = lab.play([migrate_task(lab, 'm', bridge='br0')] + confirm_tasks(lab, 'br0'))
    assert rc == 0, out
    assert not res['m']['changed'] and not res['confirmed']['changed'], out

    rc, out, res = lab.play([migrate_task(lab, 'a', bridge='br0', state='absent'),
                             migrate_task(lab, 'a2', bridge='br0', state='absent')])
    assert rc == 0, out
    assert res['a']['changed'] and not res['a2']['changed']
    assert res['a']['addresses'] == [HOST_V4 + '/24', HOST_V4_2 + '/24', HOST_V6 + '/64']
    lab.settle('enp0s3')
    assert_same(before, lab.dump('enp0s3'))
    assert lab.bridge_exists('br0'), 'the bridge stays (documented)'
    assert lab.global_addresses('br0') == []
    assert lab.record()['status'] == 'restored'
    assert_reachable(lab)


# ---- Open vSwitch, userspace datapath (S3) -------------------------------------------------------------

@pytest.mark.parametrize('lab', [{'ovs': True}], indirect=True, ids=['ovs'])
def test_ovs_netdev_migrate_confirm_absent(lab):
    """S3's host side: eth0 into ovs0 (netdev) in one transaction, read back; traffic; confirm; absent."""
    before = lab.dump('eth0')
    r = direct(lab, bridge='ovs0', datapath_type='netdev', rollback_timeout=120)
    assert r['changed'] and not r.get('failed'), r
    assert r['bridge_type'] == 'ovs' and r['rollback']['status'] == 'armed' and r['probe']['result'] == 'ok'
    assert lab.ovs_ports('ovs0') == ['eth0']
    port = sh(['ovs-vsctl', '--db=' + lab.db, '--format=json', '--columns=external_ids', 'list', 'Port', 'eth0'],
              ns=lab.host).stdout
    assert 'netplumb_owner' in port and 'uplink' in port
    iface = sh(['ovs-vsctl', '--db=' + lab.db, 'get', 'Interface', 'eth0', 'ofport'], ns=lab.host).stdout.strip()
    assert int(iface) > 0
    assert lab.link('ovs0')['address'] == lab.mac and lab.link('ovs0')['mtu'] == 1400
    assert_reachable(lab)

    again = direct(lab, bridge='ovs0', datapath_type='netdev')
    assert not again['changed'] and again['rollback']['status'] == 'armed' and again['token'] == r['token']
    confirmed = direct(lab, bridge='ovs0', confirm=True)
    assert confirmed['changed'] and confirmed['rollback']['status'] == 'confirmed'
    assert not revert_alive(r['rollback'])
    assert not direct(lab, bridge='ovs0', confirm=True)['changed']

    gone = direct(lab, bridge='ovs0', state='absent', diff=True)
    assert gone['changed'] and 'release eth0 from bridge ovs0' in gone['actions']
    assert gone['diff']['after']['uplink']['master'] is None
    lab.settle('eth0')
    assert_same(before, lab.dump('eth0'))
    assert lab.ovs_ports('ovs0') == [] and lab.global_addresses('ovs0') == []
    assert not direct(lab, bridge='ovs0', state='absent')['changed']
    assert_reachable(lab)


@pytest.mark.parametrize('lab', [{'ovs': True}], indirect=True, ids=['ovs'])
def test_ovs_system_datapath_without_kernel_module_fails_and_reverts(lab):
    """A `system` bridge is accepted by ovs-vsctl but never gets ofports here: read back, fail, revert."""
    if os.path.isdir('/sys/module/openvswitch'):
        pytest.skip('the openvswitch kernel module is loaded here')
    before = lab.dump('eth0')
    r = direct(lab, bridge='ovs0', datapath_type='system', rollback_timeout=120)
    assert r.get('failed'), r
    assert 'reverted' in r['msg'] and 'Open vSwitch' in r['msg'], r['msg']
    lab.settle('eth0')
    assert_same(before, lab.dump('eth0'))
    assert_reachable(lab, v6=False)


# ---- lockout protection --------------------------------------------------------------------------------

def test_probe_failure_reverts_at_once(lab):
    """A probe that cannot answer: the module reverts by itself and the task fails with the reason; a later
    confirm fails loudly."""
    before = lab.dump('eth0')
    rc, out, res = lab.play([dict(migrate_task(lab, 'm', bridge='br0', probe='192.168.1.77', probe_timeout=2),
                                  ignore_errors=True)])
    m = res['m']
    assert m['failed'], m
    assert 'probe failed' in m['msg'] and '192.168.1.77' in m['msg'] and 'reverted' in m['msg'], m['msg']
    assert m['rollback']['status'] == 'reverted'
    lab.settle('eth0')
    assert_same(before, lab.dump('eth0'))
    assert not lab.bridge_exists('br0'), 'the bridge this run created is removed with the revert'
    assert_reachable(lab)
    late = direct(lab, bridge='br0', confirm=True)
    assert late.get('failed') and 'too late' in late['msg'] and 'probe failed' in late['msg'], late


def test_unconfirmed_migration_reverts_after_timeout(lab):
    """Never confirmed: the detached revert (which outlives ansible-playbook and its temporary files) puts
    the uplink back after rollback_timeout; a confirm afterwards fails loudly."""
    before = lab.dump('eth0')
    rc, out, res = lab.play([migrate_task(lab, 'm', bridge='br0', rollback_timeout=5)])
    assert rc == 0, out
    m = res['m']
    pid, token = m['rollback']['pid'], m['token']
    record = lab.record()
    if record['status'] == 'armed':  # normally: the play returned well within 5 s of arming
        _assert_detached(lab, pid, token)
    record = lab.wait_record_status('reverted', timeout=90)
    assert 'not confirmed within 5 s' in record['reason'] and record['problems'] == []
    lab.settle('eth0')
    assert_same(before, lab.dump('eth0'))
    assert not lab.bridge_exists('br0')
    assert_reachable(lab)
    assert not _is_revert(pid, token)

    rc, out, res = lab.play([dict(migrate_task(lab, 'c', bridge='br0', confirm=True), ignore_errors=True)])
    assert res['c']['failed'] and 'too late' in res['c']['msg'] and 'already reverted' in res['c']['msg']


def _assert_detached(lab, pid, token):
    """The armed revert: our token, own session with no terminal, only /dev/null open, cwd /, and the
    host's network namespace."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        fds = os.listdir('/proc/%d/fd' % pid)
        targets = set(os.readlink('/proc/%d/fd/%s' % (pid, fd)) for fd in fds)
        cwd = os.readlink('/proc/%d/cwd' % pid)
        netns = os.stat('/proc/%d/ns/net' % pid).st_ino
    except (IOError, OSError):
        return  # it fired already
    assert _is_revert(pid, token)
    sid, tty = int(fields[3]), int(fields[4])
    assert sid != os.getsid(0) and sid != pid and tty == 0
    assert targets == {'/dev/null'}, targets
    assert cwd == '/'
    assert netns == lab.inode


# ---- idempotence from intermediate states --------------------------------------------------------------

def test_a_run_killed_half_way_is_completed(lab):
    """Addresses on both, uplink not enslaved (no snapshot: the run died before writing one) -> completed;
    then a run killed after enslaving, with its revert armed -> completed and re-armed."""
    before = lab.dump('eth0')
    sh(['ip', 'link', 'add', 'br0', 'address', lab.mac, 'mtu', '1400', 'type', 'bridge'], ns=lab.host)
    sh(['ip', 'link', 'set', 'br0', 'up'], ns=lab.host)
    sh(['ip', 'addr', 'add', HOST_V4 + '/24', 'dev', 'br0'], ns=lab.host)
    r = direct(lab, bridge='br0', rollback_timeout=120)
    assert r['changed'] and not r.get('failed'), r
    assert r['actions'][0] == 'add address %s/24 to br0' % HOST_V4_2
    assert 'make eth0 a port of bridge br0' in r['actions']
    assert_reachable(lab)
    first = lab.record()

    # killed after enslaving and moving some routes: part of the addressing is back on eth0
    sh(['ip', 'addr', 'add', HOST_V4_2 + '/24', 'dev', 'eth0'], ns=lab.host)
    sh(['ip', 'route', 'replace', 'default', 'via', GW_V4, 'dev', 'eth0', 'metric', '50'], ns=lab.host)
    r = direct(lab, bridge='br0', rollback_timeout=120)
    assert r['changed'] and r['actions'] == ['move route default via %s dev eth0 metric 50 to br0' % GW_V4,
                                             'remove address %s/24 from eth0' % HOST_V4_2], r
    assert r['rollback']['status'] == 'armed' and r['token'] != first['token']
    assert not _is_revert(first['pid'], first['token']), 'the earlier revert must be replaced, not doubled'
    assert _is_revert(r['rollback']['pid'], r['token'])
    assert lab.record()['original'] == first['original'], 'the original state survives the repair'
    assert not direct(lab, bridge='br0')['changed']
    assert direct(lab, bridge='br0', confirm=True)['rollback']['status'] == 'confirmed'
    assert_reachable(lab)

    assert direct(lab, bridge='br0', state='absent')['changed']
    lab.settle('eth0')
    assert_same(before, lab.dump('eth0'))


def test_check_mode_and_confirm_edge_cases(lab):
    """Check mode reports and touches nothing; confirm with nothing to confirm fails; confirm of an
    incomplete migration fails and leaves the revert armed."""
    before = lab.dump('eth0')
    r = direct(lab, bridge='br0', check=True, diff=True)
    assert r['changed'] and r['rollback']['status'] == 'would_arm' and len(r['actions']) == 14
    assert r['diff']['before']['uplink']['master'] is None and r['diff']['after']['uplink']['master'] == 'br0'
    assert not lab.bridge_exists('br0') and lab.records() == []
    assert_same(before, lab.dump('eth0'))

    nothing = direct(lab, bridge='br0', confirm=True)
    assert nothing.get('failed') and 'nothing to confirm' in nothing['msg']
    assert not direct(lab, bridge='br0', state='absent')['changed']

    r = direct(lab, bridge='br0', rollback_timeout=120)
    assert r['changed'] and r['rollback']['status'] == 'armed'
    sh(['ip', 'route', 'replace', '172.16.5.0/24', 'dev', 'eth0', 'scope', 'link', 'metric', '20'], ns=lab.host)
    incomplete = direct(lab, bridge='br0', confirm=True)
    assert incomplete.get('failed') and 'not complete' in incomplete['msg']
    assert _is_revert(r['rollback']['pid'], r['token'])
    check = direct(lab, bridge='br0', state='absent', check=True)
    assert check['changed'] and check['rollback']['status'] == 'would_restore'
    assert _is_revert(r['rollback']['pid'], r['token']), 'check mode must not cancel the revert'
    gone = direct(lab, bridge='br0', state='absent')
    assert gone['changed'] and not _is_revert(r['rollback']['pid'], r['token'])
    lab.settle('eth0')
    assert_same(before, lab.dump('eth0'))


def test_errors_name_the_option(lab):
    before = lab.dump('eth0')
    cases = [
        (dict(bridge='lan9'), 'bridge: \'lan9\' does not exist'),
        (dict(uplink='eth9', bridge='br0'), 'uplink: there is no interface named \'eth9\''),
        (dict(bridge='eth0'), 'bridge: \'eth0\' is also the uplink'),
        (dict(bridge='br0', probe='not-an-ip'), 'probe: \'not-an-ip\' is not an IP address'),
        (dict(bridge='br0', state='absent', confirm=True), 'confirm: applies to state=present'),
        (dict(bridge='br0', rollback_timeout=-1), 'rollback_timeout:'),
    ]
    for args, words in cases:
        r = direct(lab, **args)
        assert r.get('failed') and words in r['msg'], (args, r.get('msg'))
    sh(['ip', 'link', 'add', 'br1', 'type', 'bridge'], ns=lab.host)
    sh(['ip', 'link', 'set', 'eth0', 'master', 'br1'], ns=lab.host)
    r = direct(lab, bridge='br0')
    assert r.get('failed') and 'already a port of br1' in r['msg']
    sh(['ip', 'link', 'set', 'eth0', 'nomaster'], ns=lab.host)
    sh(['ip', 'link', 'del', 'br1'], ns=lab.host)
    lab.settle('eth0')
    assert_same(before, lab.dump('eth0'))


def test_no_default_gateway_warns_and_firewall_rules_are_reported(lab):
    """Without a default route there is no probe (a warning says so); rules naming the uplink are reported."""
    sh(['ip', 'route', 'del', 'default', 'via', GW_V4, 'dev', 'eth0', 'metric', '50'], ns=lab.host)
    sh(['ip', '-6', 'route', 'del', 'default', 'via', bm_lab.GW_V6, 'dev', 'eth0'], ns=lab.host)
    sh(['ip', 'rule', 'add', 'iif', 'eth0', 'lookup', '100', 'pref', '1000'], ns=lab.host)
    if sh(['iptables', '-A', 'INPUT', '-i', 'eth0', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT'], ns=lab.host,
          check=False).returncode != 0:
        pytest.skip('iptables does not work in a network namespace here')
    r = direct(lab, bridge='br0', rollback_timeout=120)
    assert r['changed'] and r['probe']['result'] == 'skipped', r
    text = '\n'.join(bm_lab.warning_texts(r))
    assert 'no probe' in text
    assert 'ip rule "pref 1000 iif eth0 lookup 100" names eth0' in text
    assert 'iptables: 1 rule(s) name eth0' in text
    direct(lab, bridge='br0', confirm=True)
