"""Property-based tests (hypothesis) of the input parsers: interface names, CIDRs and gateways, OVSDB JSON."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import given, settings, strategies as st

from ansible_collections.netplumb.pipework.plugins.module_utils.ovs import ovsdb
from ansible_collections.netplumb.pipework.plugins.module_utils.common import validation as v
from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

settings.register_profile('np', max_examples=300, deadline=None)
settings.load_profile('np')


def kernel_accepts(name):
    """The kernel's dev_valid_name(), plus our own rule against option-like names."""
    raw = name.encode('utf-8')
    return (0 < len(raw) <= 15 and name not in ('.', '..') and not any(c in name for c in '/:')
            and not any(c.isspace() for c in name) and not name.startswith('-'))


@given(st.text(min_size=0, max_size=24))
def test_ifname_accepted_exactly_when_the_kernel_would(name):
    try:
        v.check_ifname('ifname', name)
        accepted = True
    except PipeworkError as exc:
        accepted = False
        assert exc.msg.startswith('ifname: ')
    assert accepted == kernel_accepts(name)


@given(st.ip_addresses(v=4), st.integers(min_value=0, max_value=32))
def test_ipv4_cidr_round_trips_or_is_refused_with_the_value(ip, prefix):
    text = '%s/%d' % (ip, prefix)
    try:
        iface = v.parse_interface('address', text)
    except PipeworkError as exc:
        assert repr(text) in exc.msg
        return
    assert iface == ipaddress.ip_interface(text)


@given(st.ip_addresses(v=6), st.integers(min_value=0, max_value=128))
def test_ipv6_cidr_round_trips_or_is_refused_with_the_value(ip, prefix):
    text = '%s/%d' % (ip, prefix)
    try:
        iface = v.parse_interface('address', text)
    except PipeworkError as exc:
        assert repr(text) in exc.msg
        return
    assert iface.ip == ip


@given(st.text(max_size=30))
def test_arbitrary_text_never_crashes_the_cidr_parser(text):
    try:
        v.parse_interface('address', text)
    except PipeworkError as exc:
        assert exc.msg.startswith('address: ')


@given(st.ip_addresses(v=4), st.integers(min_value=8, max_value=30), st.ip_addresses(v=4))
def test_gateway_accepted_iff_inside_the_subnet_and_not_the_address(ip, prefix, gw):
    iface = ipaddress.ip_interface('%s/%d' % (ip, prefix))
    try:
        v.gateway_reachable('gateway', gw, [iface])
        ok = True
    except PipeworkError as exc:
        ok = False
        assert str(gw) in exc.msg
    assert ok == (gw in iface.network and gw != iface.ip)


atoms = st.one_of(st.integers(-5, 70000), st.text(max_size=8), st.booleans())
uuids = st.uuids().map(lambda u: ['uuid', str(u)])
datums = st.one_of(atoms, uuids, st.lists(atoms, max_size=4).map(lambda xs: ['set', xs]),
                   st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4).map(
                       lambda d: ['map', [[k, val] for k, val in d.items()]]))


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), datums), min_size=1, max_size=6, unique_by=lambda t: t[0]))
def test_ovsdb_tables_parse_into_python_values(columns):
    headings = [c[0] for c in columns]
    text = json.dumps({'headings': headings, 'data': [[c[1] for c in columns]]})
    (row,) = ovsdb.parse_table(text)
    for name, datum in columns:
        value = row[name]
        if isinstance(datum, list) and datum[0] == 'map':
            assert value == dict((k, val) for k, val in datum[1])
        elif isinstance(datum, list) and datum[0] == 'set':
            assert value == datum[1]
        elif isinstance(datum, list) and datum[0] == 'uuid':
            assert value == datum[1]
        else:
            assert value == datum


@given(st.text(max_size=40))
def test_garbage_from_ovs_vsctl_is_an_error_not_a_crash(text):
    try:
        ovsdb.parse_table(text)
    except PipeworkError as exc:
        assert 'ovs-vsctl returned output' in exc.msg


@given(st.text(max_size=20))
def test_quoted_values_are_json_strings(value):
    assert json.loads(ovsdb.quote(value)) == value
