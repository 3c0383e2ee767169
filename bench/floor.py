"""Benchmark floor (d): the least work that wires N containers into an OVS bridge with VLAN tags and addresses.

Run inside a lab host (its network namespace and its private /run/openvswitch):

    python3 floor.py SPEC.json            # prints one JSON line with the phase timings

SPEC: {"bridge": "ovsbench", "items": [{"container", "host_ifname", "ifname", "address", "vlan"}, ...]}

What it does, and nothing more (no state read, no idempotence, no read-back):
  1. PIDs: one keep-alive HTTP connection to /var/run/docker.sock, all N inspects pipelined.
  2. Veths: ONE sendmsg of N RTM_NEWLINK requests on one raw netlink socket in this namespace; each request
     creates the pair with the host end already up, the peer born inside the container's namespace
     (IFLA_NET_NS_FD) with a chosen ifindex, so it can be configured without a lookup. (The peer cannot be
     created up: veth_open() answers ENOTCONN before the pair is linked.)
  3. Container side: one raw netlink socket per container namespace (setns there and straight back, no
     fork), link-up + RTM_NEWADDR sent in one write, all namespaces sent before any acknowledgement is read.
  4. OVS: ONE ovs-vsctl transaction: add-port with tag + the ovs-docker external_ids, for all N.
Raw netlink (struct-packed messages) instead of pyroute2 removes Python's per-message encoding cost, so
what is left is the kernel's and OVS's own cost.
"""

import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import time

from namespaces import made_in  # bench/namespaces.py (this script's directory is sys.path[0])

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_NEWADDR = 20
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFF_UP = 0x1
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
PEER_IFINDEX_BASE = 1000      # container end's ifindex (a fresh --net=none namespace only has lo = 1)
HOST_IFINDEX_BASE = 2000000   # host ends: far above anything the host allocated


def rta(kind, payload):
    size = 4 + len(payload)
    return struct.pack('=HH', size, kind) + payload + b'\0' * ((4 - size % 4) % 4)


def ifinfo(index=0, flags=0, change=0):
    return struct.pack('=BxHiII', socket.AF_UNSPEC, 0, index, flags, change)


def nlmsg(kind, flags, seq, body):
    return struct.pack('=IHHII', 16 + len(body), kind, flags, seq, 0) + body


def veth_request(seq, host_ifname, host_index, ifname, peer_index, ns_fd):
    peer = ifinfo(peer_index) + rta(IFLA_IFNAME, ifname.encode() + b'\0') \
        + rta(IFLA_NET_NS_FD, struct.pack('=I', ns_fd))
    linkinfo = rta(IFLA_INFO_KIND, b'veth\0') + rta(IFLA_INFO_DATA, rta(VETH_INFO_PEER, peer))
    body = ifinfo(host_index, IFF_UP, IFF_UP) + rta(IFLA_IFNAME, host_ifname.encode() + b'\0') \
        + rta(IFLA_LINKINFO, linkinfo)
    return nlmsg(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, body)


def up_request(seq, index):
    return nlmsg(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifinfo(index, IFF_UP, IFF_UP))


def addr_request(seq, index, cidr):
    iface = ipaddress.ip_interface(cidr)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    packed = iface.ip.packed
    body = struct.pack('=BBBBI', family, iface.network.prefixlen, 0, 0, index) \
        + rta(IFA_LOCAL, packed) + rta(IFA_ADDRESS, packed)
    return nlmsg(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, body)


def read_acks(sock, count, what):
    """Read ``count`` acknowledgements; raise on the first error."""
    got = 0
    while got < count:
        data = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, kind, _flags, seq, _pid = struct.unpack_from('=IHHII', data, off)
            if kind == NLMSG_ERROR:
                err = struct.unpack_from('=i', data, off + 16)[0]
                if err:
                    raise OSError(-err, '%s #%d: %s' % (what, seq, os.strerror(-err)))
                got += 1
            off += (length + 3) & ~3


def docker_pids(names, path='/var/run/docker.sock'):
    """N inspects pipelined on one keep-alive connection (HTTP/1.1, chunked or sized bodies)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(b''.join(b'GET /containers/%s/json HTTP/1.1\r\nHost: docker\r\n\r\n' % n.encode() for n in names))
    f = sock.makefile('rb')
    pids = []
    for name in names:
        status = f.readline()
        headers = {}
        while True:
            line = f.readline()
            if line in (b'\r\n', b''):
                break
            key, value = line.decode('latin-1').split(':', 1) if b':' in line else (line.decode('latin-1'), '')
            headers[key.strip().lower()] = value.strip()
        if 'content-length' in headers:
            body = f.read(int(headers['content-length']))
        else:
            chunks = []
            while True:
                size = int(f.readline().split(b';')[0], 16)
                if size == 0:
                    f.readline()
                    break
                chunks.append(f.read(size))
                f.readline()
            body = b''.join(chunks)
        if b' 200 ' not in status:
            raise RuntimeError('docker inspect %s: %s' % (name, status.decode().strip()))
        pids.append(json.loads(body)['State']['Pid'])
    sock.close()
    return pids


def main():
    t0 = time.monotonic()
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    items = spec['items']
    bridge = spec['bridge']
    marks = {}

    pids = docker_pids([it['container'] for it in items])
    marks['docker'] = time.monotonic()

    ns_fds = [os.open('/proc/%d/ns/net' % pid, os.O_RDONLY | os.O_CLOEXEC) for pid in pids]
    host = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    host.bind((0, 0))
    batch = b''.join(veth_request(i + 1, it['host_ifname'], HOST_IFINDEX_BASE + i, it['ifname'],
                                  PEER_IFINDEX_BASE, ns_fds[i]) for i, it in enumerate(items))
    host.sendall(batch)
    read_acks(host, len(items), 'veth')
    marks['veth'] = time.monotonic()

    socks = made_in(ns_fds, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE))
    for i, (s, it) in enumerate(zip(socks, items)):
        s.send(up_request(1, PEER_IFINDEX_BASE) + addr_request(2, PEER_IFINDEX_BASE, it['address']))
    for s in socks:
        read_acks(s, 2, 'link up / address')
        s.close()
    for fd in ns_fds:
        os.close(fd)
    marks['addr'] = time.monotonic()

    argv = ['ovs-vsctl', '--timeout=120']
    for it in items:
        port = it['host_ifname']
        argv += ['--', 'add-port', bridge, port, 'tag=%d' % it['vlan'],
                 '--', 'set', 'Interface', port, 'external_ids:container_id=%s' % it['container'],
                 'external_ids:container_iface=%s' % it['ifname']]
    subprocess.run(argv, check=True)
    marks['ovs'] = time.monotonic()

    out, last = {}, t0
    for key in ('docker', 'veth', 'addr', 'ovs'):
        out[key] = round(marks[key] - last, 4)
        last = marks[key]
    out['total'] = round(last - t0, 4)
    own = os.times()
    out['cpu'] = round(own.user + own.system + own.children_user + own.children_system, 4)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
