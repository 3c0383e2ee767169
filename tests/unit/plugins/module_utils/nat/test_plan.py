"""nat_plan: ownership, conflicts, free ports that do not move, exclusive/absent, and the restore input."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.nat import spec as nat_args
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.model import Mapping, MasqEntry, OwnedState
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.plan import (
    Planner, mapping_changes, plan_restore)
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.ports import BoundPorts
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.render import desired_chains, jumps
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.save import SavedTables, owned_state
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.target import ResolvedTarget

ADDR = {'web': '10.77.0.2/24', 'db': '10.77.0.3/24', 'web6': 'fd00::2/64'}
RANGE = (32768, 32800)


def params(**kw):
    base = dict((k, None) for k in nat_args.ARGUMENT_SPEC)
    base['timeout'] = 30
    base.update(kw)
    return base


def build(**kw):
    items, masq, state, isolate, bridge = nat_args.build(params(**kw))
    for item in items:
        if item.kind == 'container' and item.state == 'present':
            addresses = {}
            for name in (item.name, item.name + '6'):
                if name in ADDR:
                    iface = ipaddress.ip_interface(ADDR[name])
                    addresses[iface.version] = iface
            item.resolved = ResolvedTarget(item.name, 'container', addresses)
    return items, masq, state, isolate, bridge


def planner(have=None, sockets=None, foreign=None):
    bound = BoundPorts(sockets or {'tcp': [], 'udp': [], 'sctp': []})
    return Planner(have or OwnedState(), bound, RANGE, foreign or {})


def plan(have=None, sockets=None, foreign=None, **kw):
    items, masq, state, isolate, bridge = build(**kw)
    return planner(have, sockets, foreign).plan(items, masq, state, isolate, [bridge])


def ports(state, target=None):
    return sorted(((m.proto, m.host_ip, m.host_port, m.container_port) for m in state.mappings
                   if target is None or m.target == target), key=lambda t: (t[0], t[2], t[1] or ''))


def test_every_format_and_free_ports():
    new = plan(container='web', publish=['8080:80', '80', '10.0.0.1::80', '5300:53/udp', '8000-8001:90-91'])
    assert ports(new) == [('tcp', None, 8000, 90), ('tcp', None, 8001, 91), ('tcp', None, 8080, 80),
                          ('tcp', None, 32768, 80), ('tcp', '10.0.0.1', 32769, 80), ('udp', None, 5300, 53)]
    assert all(m.container_ip == '10.77.0.2' and m.hairpin_src == '10.77.0.0/24' for m in new.mappings)


def test_free_ports_skip_mapped_bound_and_docker_ports():
    have = OwnedState([Mapping('db', 4, 'tcp', None, 32768, '10.77.0.3', 1)])
    sockets = {'tcp': [('0.0.0.0', 32769, '0A'), ('10.0.0.9', 32771, '01')], 'udp': [], 'sctp': []}
    foreign = {4: [('DOCKER', 'tcp', None, (32770, 32770), '-A DOCKER ...')]}
    new = plan(have, sockets, foreign, container='web', publish=['80', '81'])
    assert ports(new, 'web') == [('tcp', None, 32772, 80), ('tcp', None, 32773, 81)]


def test_rerun_keeps_free_ports_and_changes_nothing():
    first = plan(container='web', publish=['80', '81/udp', '8080:80'])
    again = plan(first, container='web', publish=['80', '81/udp', '8080:80'])
    assert ports(again) == ports(first)
    assert mapping_changes(first, again) == ([], [])


def test_recreated_container_takes_its_mappings_over():
    first = plan(container='web', publish=['80', '53/udp'])
    ADDR['web'] = '10.77.0.9/24'
    try:
        again = plan(first, container='web', publish=['80', '53/udp'])
    finally:
        ADDR['web'] = '10.77.0.2/24'
    assert ports(again) == ports(first)
    assert set(m.container_ip for m in again.mappings) == {'10.77.0.9'}
    lines, flush = mapping_changes(first, again)
    assert len(lines) == 2 and all(line.startswith('change ') for line in lines)
    assert flush == [(4, 32768)]


def test_port_of_another_target_is_an_error_naming_both():
    have = plan(container='db', publish=['8080:5432'])
    with pytest.raises(PipeworkError) as err:
        plan(have, container='web', publish=['8080:80'])
    assert "'db'" in err.value.msg and "'web'" in err.value.msg and "'8080:80'" in err.value.msg
    # a different protocol or a different specific address does not collide
    assert ports(plan(have, container='web', publish=['8080:80/udp']), 'web') == [('udp', None, 8080, 80)]
    have = plan(container='db', publish=['10.0.0.1:8080:5432'])
    assert ports(plan(have, container='web', publish=['10.0.0.2:8080:80']), 'web') == [('tcp', '10.0.0.2', 8080, 80)]
    with pytest.raises(PipeworkError):
        plan(have, container='web', publish=['8080:80'])  # all addresses include 10.0.0.1


def test_bound_port_is_an_error():
    sockets = {'tcp': [('0.0.0.0', 8080, '0A')], 'udp': [('127.0.0.1', 5300, '07')], 'sctp': []}
    with pytest.raises(PipeworkError) as err:
        plan(None, sockets, container='web', publish=['8080:80'])
    assert 'bound by a local process' in err.value.msg and '0.0.0.0:8080' in err.value.msg
    # a connected (not listening) TCP socket does not count; a loopback UDP socket is not shadowed by a
    # mapping that does not answer on 127.0.0.1, but is by one that does
    sockets['tcp'] = [('10.0.0.5', 8080, '01')]
    assert plan(None, sockets, container='web', publish=['8080:80', '5300:53/udp'])
    with pytest.raises(PipeworkError):
        plan(None, sockets, container='web', publish=['5300:53/udp'], localhost=True)
    # our own existing mapping is not "bound by a process" on re-runs
    have = plan(container='web', publish=['8080:80'])
    sockets['tcp'] = [('0.0.0.0', 8080, '0A')]
    assert ports(plan(have, sockets, container='web', publish=['8080:80'])) == ports(have)


def test_docker_published_port_is_an_error():
    foreign = {4: [('DOCKER', 'tcp', None, (9090, 9090), '-A DOCKER ! -i docker0 ... --dport 9090')]}
    with pytest.raises(PipeworkError) as err:
        plan(None, None, foreign, container='web', publish=['9090:80'])
    assert 'chain DOCKER' in err.value.msg


def test_exclusive_and_additive():
    have = plan(container='web', publish=['8080:80', '8081:81'])
    assert ports(plan(have, container='web', publish=['8082:82'])) == [
        ('tcp', None, 8080, 80), ('tcp', None, 8081, 81), ('tcp', None, 8082, 82)]
    assert ports(plan(have, container='web', publish=['8082:82'], exclusive=True)) == [('tcp', None, 8082, 82)]
    # the same host port to another container port replaces the old one
    assert ports(plan(have, container='web', publish=['8080:90'])) == [('tcp', None, 8080, 90), ('tcp', None, 8081, 81)]


def test_absent():
    have = plan(None, None, None, targets=[
        {'container': 'web', 'publish': ['8080:80', '81', '5300:53/udp']},
        {'container': 'db', 'publish': ['5432']}])
    assert ports(plan(have, container='web', state='absent')) == ports(have, 'db')
    left = plan(have, container='web', state='absent', publish=['8080:80', '81'])
    assert ports(left, 'web') == [('udp', None, 5300, 53)]
    lines, flush = mapping_changes(have, plan(have, container='web', state='absent', publish=['5300:53/udp']))
    assert flush == [(4, 5300)] and lines == ['unpublish 0.0.0.0:5300/udp -> 10.77.0.2:53 (web)']
    # absent does not need the container to exist
    items, masq, state, isolate, bridge = nat_args.build(params(container='gone', state='absent'))
    assert planner(have).plan(items, masq, state, isolate, []).mappings == have.mappings


def test_localhost_and_loopback_only():
    new = plan(container='web', publish=['8080:80', '127.0.0.1:8081:80', '10.0.0.1:8082:80'], localhost=True)
    flags = sorted((m.host_port, m.localhost, m.loopback_only) for m in new.mappings)
    assert flags == [(8080, True, False), (8081, False, True), (8082, False, False)]
    with pytest.raises(PipeworkError) as err:
        build(container='web', publish=['127.0.0.1:8081:80'])
    assert 'localhost: true' in err.value.msg


def test_ipv6_and_both():
    new = plan(container='web', publish=['8080:80', '[2001:db8::1]:53:53/udp'], ip_version='both')
    assert sorted(((m.family, m.host_ip, m.host_port, m.container_ip) for m in new.mappings),
                  key=lambda t: (t[0], t[2])) == [
        (4, None, 8080, '10.77.0.2'), (6, '2001:db8::1', 53, 'fd00::2'), (6, None, 8080, 'fd00::2')]
    with pytest.raises(PipeworkError) as err:
        build(container='web', publish=['[::]:80:80'])
    assert 'ip_version is ipv4' in err.value.msg


def test_masquerade_and_isolation():
    new = plan(masquerade=['10.77.0.0/24'], bridge='npbr0')
    assert new.masquerade == [MasqEntry('10.77.0.0/24', 'npbr0')] and new.isolate == {}
    again = plan(new, masquerade=['10.77.0.0/24'], bridge='npbr0', isolate=True)
    assert again.isolate == {4: ['npbr0']}
    assert plan(again, masquerade=['10.77.0.0/24'], bridge='npbr0').isolate == {4: ['npbr0']}
    assert plan(again, isolate=False).isolate == {}
    gone = plan(again, masquerade=['10.77.0.0/24'], bridge='npbr0', state='absent')
    assert gone.masquerade == []
    with pytest.raises(PipeworkError):
        build(masquerade=['10.77.0.0/24'])


def test_bad_input_names_the_item():
    with pytest.raises(PipeworkError) as err:
        build(targets=[{'container': 'web', 'publish': ['80']}, {'container': 'db', 'publish': ['70000']}])
    assert err.value.msg.startswith('targets[1]:') and "'70000'" in err.value.msg
    with pytest.raises(PipeworkError):
        build(targets=[{'container': 'web'}, {'container': 'web'}])
    with pytest.raises(PipeworkError):
        build(container='web', destination='10.0.0.1')
    with pytest.raises(PipeworkError):
        build(container='bad name')
    with pytest.raises(PipeworkError):
        build(destination='10.0.0.300', publish=['80'])
    with pytest.raises(PipeworkError):
        build(publish=['80'])


def test_check_mode_note_for_a_container_not_wired_yet():
    items, masq, state, isolate, bridge = build(container='web', publish=['80'])
    items[0].resolved = ResolvedTarget('web', 'container', {}, missing='no eth1 yet')
    p = planner()
    new = p.plan(items, masq, state, isolate, [])
    assert new.mappings == [] and len(p.notes) == 1 and 'no eth1 yet' in p.notes[0]


# -- the restore input ---------------------------------------------------------------------------

BASE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""


def applied(state, family=4, parent='DOCKER-USER'):
    """The iptables-save text of BASE after ``state`` was applied (as the kernel would print it)."""
    desired = desired_chains(state, family)
    out = []
    for block in BASE.strip().split('COMMIT'):
        block = block.strip()
        if not block:
            continue
        table = block.splitlines()[0][1:]
        out.append(block)
        if desired is not None:
            out.extend(':%s - [0:0]' % c for c in desired[table])
            for tbl, par, own, args, insert in jumps(family, parent):
                if tbl == table:
                    out.append('-A %s %s' % (par, args))
            for rules in desired[table].values():
                out.extend(rules)
        out.append('COMMIT')
    return '\n'.join(out) + '\n'


def test_restore_from_nothing_adds_chains_and_jumps_once():
    state = plan(container='web', publish=['8080:80'], masquerade=['10.77.0.0/24'], bridge='npbr0')
    saved = SavedTables(BASE, 4)
    restore = plan_restore(saved, desired_chains(state, 4), [])
    text = restore.text
    assert text.count('*nat') == 1 and text.count('*filter') == 1 and text.count('COMMIT') == 2
    assert '-I DOCKER-USER 1 -m comment --comment "netplumb/jump" -j NETPLUMB-FORWARD' in text
    assert text.count('-j NETPLUMB-DNAT') == 2  # PREROUTING and OUTPUT
    assert ':NETPLUMB-DNAT - [0:0]' in text
    assert '-X NETPLUMB-DNAT' in restore.rollback and '-D PREROUTING' in restore.rollback


def test_restore_nothing_to_do_when_rules_match():
    state = plan(container='web', publish=['8080:80', '53/udp'], localhost=True)
    saved = SavedTables(applied(state), 4)
    assert owned_state(saved)[0] == state.mappings or sorted(owned_state(saved)[0], key=lambda m: m.sort_key()) == \
        sorted(state.mappings, key=lambda m: m.sort_key())
    restore = plan_restore(saved, desired_chains(state, 4), [])
    assert restore.text == '' and restore.changes == []


def test_restore_rewrites_only_the_changed_table_and_removes_duplicate_jumps():
    state = plan(container='web', publish=['8080:80'])
    text = applied(state).replace('-A PREROUTING', '-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment '
                                  '"netplumb/jump" -j NETPLUMB-DNAT\n-A PREROUTING', 1)
    saved = SavedTables(text, 4)
    restore = plan_restore(saved, desired_chains(state, 4), [])
    assert '*filter' not in restore.text
    assert restore.text.count('-D PREROUTING') == 1 and ':NETPLUMB-DNAT' not in restore.text
    newer = plan(state, container='web', publish=['8081:80'])
    restore = plan_restore(SavedTables(applied(state), 4), desired_chains(newer, 4), [])
    assert ':NETPLUMB-DNAT - [0:0]' in restore.text and '-A PREROUTING' not in restore.text


def test_restore_when_nothing_is_owned_deletes_everything():
    state = plan(container='web', publish=['8080:80'])
    saved = SavedTables(applied(state), 4)
    restore = plan_restore(saved, None, [])
    for chain in ('NETPLUMB-DNAT', 'NETPLUMB-LOCALHOST', 'NETPLUMB-MASQ', 'NETPLUMB-FORWARD', 'NETPLUMB-INPUT'):
        assert '-X %s' % chain in restore.text
    assert restore.text.count('-D ') == len(jumps(4, 'DOCKER-USER'))
    assert plan_restore(SavedTables(BASE, 4), None, []).text == ''


def test_restore_keeps_a_forward_jump_made_before_docker_arrived():
    state = plan(container='web', publish=['8080:80'])
    saved = SavedTables(applied(state, parent='FORWARD'), 4)
    assert saved.has_chain('filter', 'DOCKER-USER')
    assert plan_restore(saved, desired_chains(state, 4), []).text == ''


def test_a_port_given_up_in_the_same_run_can_be_taken():
    have = plan(container='db', publish=['8080:5432'])
    new = plan(have, targets=[{'container': 'db', 'state': 'absent'}, {'container': 'web', 'publish': ['8080:80']}])
    assert [(m.target, m.host_port) for m in new.mappings] == [('web', 8080)]
