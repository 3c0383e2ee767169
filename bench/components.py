"""Cost of the pieces a docker_veth run is made of, next to the least they can cost. Run inside a lab host
whose N containers are attached (after a run of (a)), as the module would see them:

    python components.py SPEC.json          # prints one JSON line

Each figure is measured as wall time and as CPU time of this process (CPU time is what a loaded machine
distorts least). What is compared, per run of N attachments:
  imports        python -c 'import X' in a fresh interpreter, minus a bare interpreter (ms)
  docker_sdk     N x docker.APIClient.inspect_container (what module_utils/docker/containers.py does)
  docker_sdk_noenv   the same with the session's trust_env = False (no proxy lookup from the environment per call)
  docker_raw     N inspects pipelined on one keep-alive HTTP connection (bench/floor.py)
  docker_httpclient  N inspects with the stdlib http.client over the socket, one after the other
  ns_pyroute2    per container namespace: IPRoute() via setns + links/addrs/routes dumps (module_utils/linux/netlink_state.py)
  ns_pyroute2_open   per container namespace: only IPRoute() via setns, and close
  ns_raw         the same three dumps with a raw netlink socket (no decoding beyond what planning needs)
  ovs_read       one `ovs-vsctl --format=json` read of Bridge/Port/Interface (module_utils/ovs/ovsdb.py Vsctl.read_state)
"""

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import floor  # noqa: E402
from namespaces import made_in_pid  # noqa: E402

RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
NLM_F_DUMP = 0x300
NLMSG_DONE = 3


def timed(fn):
    w, c = time.monotonic(), time.process_time()
    out = fn()
    return {'wall': round(time.monotonic() - w, 4), 'cpu': round(time.process_time() - c, 4)}, out


def import_cost(python, module):
    code = 'import time; t = time.perf_counter(); %s; print(time.perf_counter() - t)' % (
        'import ' + module if module else 'pass')
    best = None
    for attempt in range(3):  # pylint: disable=unused-variable
        out = subprocess.run([python, '-c', code], capture_output=True, text=True, check=True).stdout
        value = float(out.strip())
        best = value if best is None else min(best, value)
    return round(best, 4)


def raw_dump(sock, kind, family=socket.AF_UNSPEC):
    body = struct.pack('=BxHiII', family, 0, 0, 0, 0) if kind == RTM_GETLINK else struct.pack('=B3x', family)
    if kind == RTM_GETROUTE:
        body = struct.pack('=BBBBBBBBI', family, 0, 0, 0, 0, 0, 0, 0, 0)
    sock.send(floor.nlmsg(kind, floor.NLM_F_REQUEST | NLM_F_DUMP, 1, body))
    count = 0
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, mtype = struct.unpack_from('=IH', data, off)
            if mtype == NLMSG_DONE:
                return count
            count += 1
            off += (length + 3) & ~3


class UnixHTTPConnection(http.client.HTTPConnection):
    """Stdlib HTTP/1.1 over the Docker socket: what module_utils/docker/containers.py could use instead of the SDK."""

    def __init__(self, path='/var/run/docker.sock'):
        super().__init__('localhost')
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def http_inspects(names):
    """One keep-alive connection, one GET /containers/NAME/json after the other (no pipelining)."""
    conn = UnixHTTPConnection()
    pids = []
    for name in names:
        conn.request('GET', '/containers/%s/json' % name)
        resp = conn.getresponse()
        pids.append(json.loads(resp.read())['State']['Pid'])
    conn.close()
    return pids


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    names = [it['container'] for it in spec['items']]
    n = len(names)
    out = {'n': n}

    base = import_cost(sys.executable, None)
    out['imports_ms'] = dict((m, round((import_cost(sys.executable, m) - base) * 1000))
                             for m in ('pyroute2', 'docker', 'ansible.module_utils.basic'))

    import docker  # pylint: disable=import-outside-toplevel
    api = docker.APIClient(version='auto')
    api.inspect_container(names[0])
    out['docker_sdk'] = timed(lambda: [api.inspect_container(x) for x in names])[0]
    api.trust_env = False
    out['docker_sdk_noenv'] = timed(lambda: [api.inspect_container(x) for x in names])[0]
    api.close()
    out['docker_raw'], pids = timed(lambda: floor.docker_pids(names))
    out['docker_httpclient'] = timed(lambda: http_inspects(names))[0]

    from pyroute2 import IPRoute  # pylint: disable=import-outside-toplevel
    from ansible_collections.netplumb.pipework.plugins.module_utils.linux.netlink_state import read_namespace  # noqa

    def pyroute2_reads():
        for pid in pids:
            ipr = made_in_pid(pid, IPRoute)
            try:
                read_namespace(ipr)
            finally:
                ipr.close()
    out['ns_pyroute2'] = timed(pyroute2_reads)[0]

    def pyroute2_open_only():
        for pid in pids:
            made_in_pid(pid, IPRoute).close()
    out['ns_pyroute2_open'] = timed(pyroute2_open_only)[0]

    def raw_reads():
        total = 0
        for pid in pids:
            s = made_in_pid(pid, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0))
            try:
                total += raw_dump(s, RTM_GETLINK) + raw_dump(s, RTM_GETADDR) + raw_dump(s, RTM_GETROUTE, socket.AF_INET)
            finally:
                s.close()
        return total
    out['ns_raw'], out['ns_raw_messages'] = timed(raw_reads)

    argv = ['ovs-vsctl', '--format=json', '--', '--columns=_uuid,name,ports,datapath_type,external_ids', 'list', 'Bridge',
            '--', '--columns=_uuid,name,interfaces,tag,trunks,vlan_mode,external_ids', 'list', 'Port',
            '--', '--columns=_uuid,name,type,ofport,error,external_ids', 'list', 'Interface']
    out['ovs_read'] = timed(lambda: subprocess.run(argv, capture_output=True, check=True))[0]
    print(json.dumps(out))


if __name__ == '__main__':
    main()
