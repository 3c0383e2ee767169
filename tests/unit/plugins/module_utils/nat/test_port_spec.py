"""Docker -p spec parsing: the documented formats, the errors, and properties (hypothesis)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError
from ansible_collections.netplumb.pipework.plugins.module_utils.nat.port_spec import (
    PROTOCOLS, parse_publish, parse_publish_list)


def one(spec):
    reqs = parse_publish(spec)
    assert len(reqs) == 1
    return reqs[0]


@pytest.mark.parametrize('spec, expected', [
    ('192.168.1.102:8080:80', ('tcp', 4, '192.168.1.102', 8080, 80)),
    ('192.168.1.102::80', ('tcp', 4, '192.168.1.102', None, 80)),
    ('8080:80', ('tcp', None, None, 8080, 80)),
    ('80', ('tcp', None, None, None, 80)),
    (80, ('tcp', None, None, None, 80)),
    ('5353:53/udp', ('udp', None, None, 5353, 53)),
    ('5353:53/UDP', ('udp', None, None, 5353, 53)),
    ('9000/sctp', ('sctp', None, None, None, 9000)),
    ('0.0.0.0:8080:80', ('tcp', 4, None, 8080, 80)),
    ('[::]:8080:80', ('tcp', 6, None, 8080, 80)),
    ('[2001:db8::1]:8080:80/udp', ('udp', 6, '2001:db8::1', 8080, 80)),
    ('[2001:db8::1]::80', ('tcp', 6, '2001:db8::1', None, 80)),
    ('127.0.0.1:8080:80', ('tcp', 4, '127.0.0.1', 8080, 80)),
    ('  8080:80/tcp ', ('tcp', None, None, 8080, 80)),
])
def test_formats(spec, expected):
    assert one(spec).as_tuple() == expected


def test_range_maps_port_by_port():
    reqs = parse_publish('8000-8002:80-82/udp')
    assert [(r.host_port, r.container_port, r.proto) for r in reqs] == [(8000, 80, 'udp'), (8001, 81, 'udp'),
                                                                        (8002, 82, 'udp')]
    assert all(r.spec == '8000-8002:80-82/udp' for r in reqs)


def test_container_range_gets_free_ports():
    reqs = parse_publish('10.0.0.1::7000-7001')
    assert [(r.host_ip, r.host_port, r.container_port) for r in reqs] == [('10.0.0.1', None, 7000),
                                                                          ('10.0.0.1', None, 7001)]


@pytest.mark.parametrize('spec, words', [
    ('0', 'out of range'),
    ('70000', 'out of range'),
    ('8080:0', 'out of range'),
    ('70000:80', 'out of range'),
    ('1.2.3:80:80', 'not an IPv4 address'),
    ('999.1.1.1:80:80', 'not an IPv4 address'),
    ('80/tcpx', 'unknown protocol'),
    ('80/icmp', 'unknown protocol'),
    ('8000-8002:80-81', 'has 3 ports but container range 80-81 has 2'),
    ('8000-8002:80', 'has 3 ports'),
    ('82-80', 'ends before it starts'),
    ('', 'empty'),
    ('abc', 'not a port number'),
    (':80', 'empty host port'),
    ('::80', 'empty host address'),
    ('1:2:3:4', 'too many'),
    ('2001:db8::1:80:80', 'too many'),
    ('[2001:db8::1:80:80', 'closing'),
    ('[2001:db8::1]80:80', 'expected ":"'),
    ('[1.2.3.4]:80:80', 'not an IPv6 address'),
    ('[::1]:80:80', 'loopback'),
    ('224.0.0.1:80:80', 'multicast'),
    ('80-', 'not a port number'),
    (True, 'expected a string'),
])
def test_bad_specs_name_the_spec(spec, words):
    with pytest.raises(PipeworkError) as err:
        parse_publish(spec)
    assert words in err.value.msg
    assert repr(spec) in err.value.msg


def test_list_refuses_the_same_host_port_twice():
    with pytest.raises(PipeworkError) as err:
        parse_publish_list(['8080:80', '10.0.0.1:8079-8081:90-92'])
    assert "'8080:80'" in err.value.msg and 'host port 8080/tcp' in err.value.msg
    # different protocols or different specific addresses are fine
    assert len(parse_publish_list(['8080:80', '8080:80/udp', '10.0.0.1:9000:1', '10.0.0.2:9000:1'])) == 4
    # different families with explicit addresses are fine
    assert len(parse_publish_list(['0.0.0.0:8080:80', '[::]:8080:80'])) == 2


# -- properties --------------------------------------------------------------------------------

ports = st.integers(min_value=1, max_value=65535)
protos = st.sampled_from(PROTOCOLS)
ipv4 = st.ip_addresses(v=4).filter(lambda a: not a.is_multicast)
ipv6 = st.ip_addresses(v=6).filter(lambda a: not a.is_multicast and not a.is_loopback)


@given(host=ports, container=ports, proto=protos, ip=st.one_of(st.none(), ipv4, ipv6))
def test_roundtrip_single(host, container, proto, ip):
    if ip is None:
        spec = '%d:%d/%s' % (host, container, proto)
    elif ip.version == 4:
        spec = '%s:%d:%d/%s' % (ip, host, container, proto)
    else:
        spec = '[%s]:%d:%d/%s' % (ip, host, container, proto)
    req = one(spec)
    assert (req.host_port, req.container_port, req.proto) == (host, container, proto)
    if ip is None:
        assert req.family is None and req.host_ip is None
    else:
        assert req.family == ip.version
        assert req.host_ip == (None if ip.is_unspecified else str(ip))


@given(start=ports, length=st.integers(min_value=1, max_value=64), cstart=ports, proto=protos)
def test_ranges_pair_port_by_port(start, length, cstart, proto):
    end, cend = start + length - 1, cstart + length - 1
    spec = '%d-%d:%d-%d/%s' % (start, end, cstart, cend, proto)
    if end > 65535 or cend > 65535:
        with pytest.raises(PipeworkError):
            parse_publish(spec)
        return
    reqs = parse_publish(spec)
    assert len(reqs) == length
    assert all(r.host_port - r.container_port == start - cstart for r in reqs)
    assert [r.container_port for r in reqs] == list(range(cstart, cend + 1))


@given(a=st.integers(min_value=1, max_value=30), b=st.integers(min_value=1, max_value=30))
def test_range_lengths_must_match(a, b):
    spec = '%d-%d:%d-%d' % (1000, 1000 + a - 1, 2000, 2000 + b - 1)
    if a == b:
        assert len(parse_publish(spec)) == a
    else:
        with pytest.raises(PipeworkError) as err:
            parse_publish(spec)
        assert repr(spec) in err.value.msg


@given(port=st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_out_of_range_ports_fail(port):
    for spec in ('%d' % port, '%d:80' % port, '80:%d' % port):
        if spec.startswith('-') or ':-' in spec:
            continue  # negative numbers are not port syntax at all; covered by the text fuzz below
        with pytest.raises(PipeworkError) as err:
            parse_publish(spec)
        assert 'out of range' in err.value.msg


@settings(max_examples=300)
@given(text=st.text(alphabet='0123456789:.-/[]abcdefudpstcx ', max_size=30))
def test_anything_either_parses_sanely_or_fails_cleanly(text):
    """No other exception than PipeworkError; every parsed request is within bounds."""
    try:
        reqs = parse_publish(text)
    except PipeworkError as exc:
        assert repr(text) in exc.msg
        return
    assert reqs
    for r in reqs:
        assert 1 <= r.container_port <= 65535
        assert r.host_port is None or 1 <= r.host_port <= 65535
        assert r.proto in PROTOCOLS
        if r.host_ip is not None:
            assert ipaddress.ip_address(r.host_ip).version == r.family
