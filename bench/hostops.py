"""Helpers the benchmark runs INSIDE a lab host (its net/mount/UTS namespaces, its own OVS).

    python hostops.py reset BRIDGE            # fresh netdev bridge, no benchmark veths left
    python hostops.py verify SPEC.json        # every item wired as asked (address, VLAN); one ping pair
    python hostops.py netns-add PREFIX COUNT  # COUNT namespaces PREFIX0000.. with `ip -batch` (one process)
    python hostops.py netns-del PREFIX        # delete them again (and host veths left in this host)

Prints one JSON line. Works on whatever method wired the containers (module, ovs-docker, floor): the
container end is found in the container, its peer by ifindex in the host, the port by name in OVS.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

from pyroute2 import IPRoute

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import floor  # noqa: E402  (docker_pids)
from namespaces import made_in_pid  # noqa: E402

# Host ends the benchmark makes: docker_veth's derived names, ovs-docker's <13 hex>_l, the floor's npf<i>.
OURS = re.compile(r'^(np[0-9a-f]{11}|[0-9a-f]{13}_l|npf\d+)$')


def vsctl(*args, check=True):
    return subprocess.run(['ovs-vsctl', '--timeout=120'] + list(args), check=check, capture_output=True, text=True)


def delete_links(ipr, links):
    """Delete these links (read the whole dump before deleting anything); returns how many went."""
    gone = 0
    for link in links:
        try:
            ipr.link('del', index=link['index'])
            gone += 1
        except Exception:  # pylint: disable=broad-except
            pass  # its peer's deletion took it already
    return gone


def is_our_veth(link):
    info = link.get_attr('IFLA_LINKINFO')
    kind = info.get_attr('IFLA_INFO_KIND') if info is not None else None
    return kind == 'veth' and bool(OURS.match(link.get_attr('IFLA_IFNAME')))


def delete_our_veths(ipr):
    return delete_links(ipr, [link for link in ipr.get_links() if is_our_veth(link)])


def reset(bridge, container_prefix=None):
    vsctl('--if-exists', 'del-br', bridge)
    with IPRoute() as ipr:
        gone = delete_our_veths(ipr)
    vsctl('add-br', bridge, '--', 'set', 'Bridge', bridge, 'datapath_type=netdev')
    out = {'deleted_veths': gone}
    if container_prefix:
        out['deleted_container_ends'] = clear_containers(container_prefix)
    return out


def clear_containers(prefix):
    """Delete every interface but lo in the running containers named prefix*.

    A method that fails half-way (ovs-docker renames its veth to eth1 only if eth1 is free, and goes on
    after errors) can leave a container end whose host peer is not one of ours; the next method would then
    find eth1 taken. Every method must start from containers with no extra interface.
    """
    import docker  # pylint: disable=import-outside-toplevel
    client = docker.APIClient(base_url='unix:///var/run/docker.sock')
    try:
        listed = client.containers(filters={'name': prefix})
        pids = [client.inspect_container(c['Id'])['State']['Pid'] for c in listed
                if any(n.lstrip('/').startswith(prefix) for n in c.get('Names') or [])]
    finally:
        client.close()
    gone = 0
    for pid in pids:
        if not pid:
            continue
        with made_in_pid(pid, IPRoute) as ipr:
            gone += delete_links(ipr, [link for link in ipr.get_links() if link.get_attr('IFLA_IFNAME') != 'lo'])
    return gone


def ovs_ports():
    out = vsctl('--format=json', '--columns=name,tag', 'list', 'Port').stdout
    doc = json.loads(out)
    ports = {}
    for name, tag in doc['data']:
        ports[name] = tag if isinstance(tag, int) else None
    return ports


def container_link(pid, ifname):
    """(peer ifindex in the host, addresses) of ifname inside the container, via setns (no fork)."""
    with made_in_pid(pid, IPRoute) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None, [], False
        link = ipr.get_links(found[0])[0]
        addrs = ['%s/%d' % (a.get_attr('IFA_ADDRESS'), a['prefixlen']) for a in ipr.get_addr(index=found[0])
                 if a['scope'] == 0]
        return link.get_attr('IFLA_LINK'), addrs, bool(link['flags'] & 1)


def ping(pid, address):
    proc = subprocess.run(['nsenter', '--net=/proc/%d/ns/net' % pid, 'ping', '-c', '2', '-i', '0.2', '-W', '1',
                           '-q', address], capture_output=True, text=True, check=False)
    return proc.returncode == 0


def verify(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    items = spec['items']
    pids = floor.docker_pids([it['container'] for it in items])
    ports = ovs_ports()
    with IPRoute() as ipr:
        host_names = dict((link['index'], link.get_attr('IFLA_IFNAME')) for link in ipr.get_links())
    problems = []
    for it, pid in zip(items, pids):
        peer, addrs, up = container_link(pid, it.get('ifname', 'eth1'))
        if peer is None:
            problems.append('%s: no %s' % (it['container'], it.get('ifname', 'eth1')))
            continue
        host_end = host_names.get(peer)
        if addrs != [it['address']] or not up:
            problems.append('%s: addresses %s up=%s, want %s' % (it['container'], addrs, up, it['address']))
        if host_end not in ports:
            problems.append('%s: host end %s is not an OVS port' % (it['container'], host_end))
        elif ports[host_end] != it['vlan']:
            problems.append('%s: port %s tag %s, want %s' % (it['container'], host_end, ports[host_end], it['vlan']))
    pings = {}
    if not problems and len(items) >= 5:
        # Same VLAN (items 0 and 4 share it: VLAN = 101 + i % 4) must answer; another VLAN must not.
        pings['same_vlan'] = ping(pids[0], items[4]['address'].split('/')[0])
        pings['other_vlan'] = ping(pids[0], items[1]['address'].split('/')[0])
        if not pings['same_vlan'] or pings['other_vlan']:
            problems.append('ping check failed: %s' % pings)
    return {'checked': len(items), 'problems': problems[:10], 'problem_count': len(problems), 'pings': pings}


def netns_add(prefix, count):
    with tempfile.NamedTemporaryFile('w', suffix='.batch', delete=False) as f:
        for i in range(count):
            f.write('netns add %s%04d\n' % (prefix, i))
        path = f.name
    try:
        subprocess.run(['ip', '-batch', path], check=True, capture_output=True, text=True)
    finally:
        os.unlink(path)
    return {'created': count}


def netns_del(prefix):
    names = sorted(n for n in os.listdir('/run/netns') if n.startswith(prefix)) if os.path.isdir('/run/netns') else []
    if names:
        with tempfile.NamedTemporaryFile('w', suffix='.batch', delete=False) as f:
            for n in names:
                f.write('netns delete %s\n' % n)
            path = f.name
        try:
            subprocess.run(['ip', '-force', '-batch', path], check=False, capture_output=True, text=True)
        finally:
            os.unlink(path)
    with IPRoute() as ipr:
        gone = delete_our_veths(ipr)
    return {'deleted_netns': len(names), 'deleted_veths': gone}


def main():
    cmd = sys.argv[1]
    if cmd == 'reset':
        out = reset(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif cmd == 'verify':
        out = verify(sys.argv[2])
    elif cmd == 'netns-add':
        out = netns_add(sys.argv[2], int(sys.argv[3]))
    elif cmd == 'netns-del':
        out = netns_del(sys.argv[2])
    else:
        raise SystemExit('unknown command %s' % cmd)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
