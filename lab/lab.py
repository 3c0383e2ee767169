"""A multi-host lab on one machine for netplumb.pipework (stdlib only).

Each lab "host" is a network namespace plus private mount and UTS namespaces, with its own hostname,
its own ovsdb-server/ovs-vswitchd (userspace datapath) and an sshd on its uplink address. The uplinks
plug into a "switch" namespace (a Linux bridge without VLAN filtering, so 802.1Q trunks pass, holding
the gateway address); a LAN client namespace sits on the same switch. The root namespace gets no lab
address: the controller reaches the hosts over SSH through a relay that runs in the switch namespace.

CLI:  lab.py up [--hosts N] [--uplink eth0] [--name NAME] [--subnet CIDR] ...
      lab.py down|status|inventory|ssh-config [--name NAME]
      lab.py exec HOST -- CMD...      (HOST may also be "switch" or "client")
API:  Lab(name, hosts=2, uplink='eth0', ...).up() / .down() / .exec(host, argv) / .inventory_path
See lab/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE_ROOT = REPO / 'lab-state'
STATE_VERSION = 1
NS_PREFIX = 'np-'
BRIDGE = 'swbr'  # the switch's Linux bridge, inside the switch namespace
OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'
SSHD = '/usr/sbin/sshd'  # absolute: sshd re-executes itself for every connection
# Paths inside a host's private mount namespace that get per-host directories/files bound over them.
HOST_DIR_BINDS = (('run', '/run/openvswitch'), ('etc', '/etc/openvswitch'), ('log', '/var/log/openvswitch'))
HOST_FILE_BINDS = (('hosts', '/etc/hosts'), ('resolv.conf', '/etc/resolv.conf'), ('hostname', '/etc/hostname'))
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,23}$')
HOST_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_-]{0,31}$')  # valid as hostname and as inventory name
IFNAME_RE = re.compile(r'^[A-Za-z0-9_.-]{1,15}$')
MAX_HOSTS = 32
READY_TIMEOUT = 15.0


class LabError(Exception):
    """Anything that stops a lab command; the message says what and where."""


# --------------------------------------------------------------------------- configuration

@dataclasses.dataclass
class LabConfig:
    """What a lab looks like. Unset addresses are derived from the subnet (scenario S3 by default)."""

    name: str = 'lab'
    hosts: int = 2
    names: list | None = None          # host names; default host1..hostN
    subnet: str = '10.10.101.0/24'
    addresses: list | None = None      # host addresses without prefix; default .105, .106, ...
    gateway: str | None = None         # default: last usable address (.254 in a /24)
    client: str | None = None          # LAN client; default .200 (or the one below the gateway)
    uplink: str = 'eth0'               # interface name of the uplink inside every host
    group: str = 'lab'                 # inventory group of the hosts
    state_dir: str | None = None       # default <repo>/lab-state/<name>
    python_interpreter: str | None = None  # ansible_python_interpreter on the hosts

    def resolved(self) -> 'LabConfig':
        """A validated copy with every default filled in (what a lab is built from and compared by)."""
        cfg = dataclasses.replace(self)
        _check(NAME_RE.match(cfg.name or ''), f'name {cfg.name!r}: use letters, digits, _ . - (max 24)')
        cfg.names = list(cfg.names) if cfg.names else [f'host{i}' for i in range(1, int(cfg.hosts) + 1)]
        cfg.hosts = len(cfg.names)
        _check(1 <= cfg.hosts <= MAX_HOSTS, f'hosts {cfg.hosts}: must be 1..{MAX_HOSTS}')
        for host in cfg.names:
            _check(HOST_RE.match(host), f'names: {host!r} is not a valid host name')
            _check(host not in ('switch', 'client'), f'names: {host!r} is reserved for lab.py exec')
        _check(len(set(cfg.names)) == cfg.hosts, f'names {cfg.names}: duplicates')
        _check(IFNAME_RE.match(cfg.uplink) and cfg.uplink != 'lo', f'uplink {cfg.uplink!r}: not a usable interface name')
        _check(HOST_RE.match(cfg.group), f'group {cfg.group!r}: not a valid inventory group name')
        try:
            net = ipaddress.IPv4Network(cfg.subnet, strict=False)
        except ValueError as exc:
            raise LabError(f'subnet {cfg.subnet!r}: {exc}') from None
        _check(net.prefixlen <= 29, f'subnet {cfg.subnet}: too small for a lab')
        cfg.subnet = str(net)
        usable = list(net.hosts())
        cfg.gateway = _addr_in(cfg.gateway or str(usable[-1]), net, 'gateway')
        cfg.client = _addr_in(cfg.client or _default_client(net, cfg.gateway), net, 'client')
        cfg.addresses = [_addr_in(a, net, 'addresses') for a in (cfg.addresses or _default_hosts(net, cfg.hosts))]
        _check(len(cfg.addresses) == cfg.hosts, f'addresses {cfg.addresses}: need one per host ({cfg.hosts})')
        every = cfg.addresses + [cfg.gateway, cfg.client]
        _check(len(set(every)) == len(every), f'addresses {every}: hosts, gateway and client must differ')
        cfg.state_dir = str(Path(cfg.state_dir).resolve()) if cfg.state_dir else str(STATE_ROOT / cfg.name)
        cfg.python_interpreter = cfg.python_interpreter or _default_python()
        return cfg

    @classmethod
    def from_file(cls, path: str) -> 'LabConfig':
        """JSON, or YAML when PyYAML is importable (the project venv has it)."""
        text = Path(path).read_text()
        if path.endswith(('.yml', '.yaml')):
            import yaml  # pylint: disable=import-outside-toplevel  # optional, only for YAML files
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        _check(not unknown, f'{path}: unknown keys {sorted(unknown)} (known: {sorted(known)})')
        return cls(**data)


def _check(ok, message: str) -> None:
    if not ok:
        raise LabError(message)


def _addr_in(addr: str, net: ipaddress.IPv4Network, option: str) -> str:
    try:
        ip = ipaddress.IPv4Address(str(addr).split('/', maxsplit=1)[0])
    except ValueError as exc:
        raise LabError(f'{option} {addr!r}: {exc}') from None
    _check(ip in net and ip not in (net.network_address, net.broadcast_address),
           f'{option} {addr}: not a usable address of {net}')
    return str(ip)


def _default_hosts(net: ipaddress.IPv4Network, count: int) -> list:
    # S3 numbers its hosts .105, .106 in a /24; smaller subnets start at the first address.
    start = 105 if net.num_addresses >= 256 else 1
    return [str(net.network_address + start + i) for i in range(count)]


def _default_client(net: ipaddress.IPv4Network, gateway: str) -> str:
    if net.num_addresses >= 256:
        return str(net.network_address + 200)
    return str(ipaddress.IPv4Address(gateway) - 1)


def _default_python() -> str:
    # The hosts share the root filesystem: the project venv has pyroute2 and the Docker SDK that the
    # collection's modules need; without it, let Ansible discover an interpreter.
    venv = Path(os.environ.get('NP_VENV', REPO / '.build' / 'venv')) / 'bin' / 'python'
    return str(venv) if venv.exists() else 'auto_silent'


# --------------------------------------------------------------------------- small process helpers

def _tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get('PATH', '') + ':/usr/sbin:/sbin:/usr/bin:/bin')
    _check(path, f'{name}: not found (bash scripts/setup.sh installs it)')
    return path


def run(argv: list, *, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run argv (no shell), capturing text output; a failure raises LabError naming the command."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f'{shlex.join(argv)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}')
    return proc


def _proc_start(pid: int) -> int | None:
    """The start time of a live (non-zombie) process, or None: tells a recorded PID from a reused one."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(')') + 2:].split()
    # A zombie is dead for our purposes; here PID 1 does not reap orphans, so zombies linger.
    return None if fields[0] in ('Z', 'X') else int(fields[19])


def _alive(rec: dict) -> bool:
    return _proc_start(rec['pid']) == rec['start']


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _pids_in_netns(inodes: set) -> list:
    """Every process whose network namespace is one of ours (also after the ns name was deleted)."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                link = os.readlink(f'/proc/{entry}/ns/net')
            except OSError:
                continue
            if int(link[5:-1]) in inodes:  # "net:[4026532290]"
                found.append(int(entry))
    return found


def _protected_pids() -> set:
    """This process and its ancestors: never signalled, whatever namespace they are in."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f'/proc/{pid}/stat').read_text()
            pid = int(stat[stat.rindex(')') + 2:].split()[1])
        except (OSError, ValueError):
            break
    pids.add(1)
    return pids


def _terminate(pids: set, grace: float = 3.0) -> None:
    """SIGTERM, wait, then SIGKILL what is left; each process by its own PID."""
    pids = {p for p in pids if _proc_start(p) is not None} - _protected_pids()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            _reap_children()
            pids = {p for p in pids if _proc_start(p) is not None}
            time.sleep(0.02)
        if not pids:
            return
    raise LabError(f'processes did not die: {sorted(pids)}')


def _reap_children() -> None:
    # Keepers started by this process are its children: collect them so they do not stay zombies.
    while True:
        try:
            pid = os.waitpid(-1, os.WNOHANG)[0]
        except ChildProcessError:
            return
        if pid == 0:
            return


def _listening(pid: int, address: str, port: int) -> bool:
    """Does the netns of pid have a TCP listener on address:port? (/proc/PID/net/tcp is per netns)."""
    want = f'{int.from_bytes(socket.inet_aton(address), sys.byteorder):08X}:{port:04X}'
    try:
        lines = Path(f'/proc/{pid}/net/tcp').read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == want and line.split()[3] == '0A' for line in lines)


class _Lock:
    """flock on <state_dir>.lock so two up/down of one lab do not interleave."""

    def __init__(self, state_dir: Path):
        self.path = Path(str(state_dir) + '.lock')
        self.fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # down unlinks the lock file while holding it: a waiter then holds a stale inode; retry.
            if _inode(str(self.path)) == os.fstat(fd).st_ino:
                self.fd = fd
                return self
            os.close(fd)

    def release(self, unlink: bool = False) -> None:
        if self.fd is None:
            return
        if unlink:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def __exit__(self, *exc):
        self.release()


# --------------------------------------------------------------------------- the lab

@dataclasses.dataclass
class LabHost:
    """One lab host as callers see it."""

    name: str
    index: int
    address: str
    prefix: int
    netns: str
    pid: int | None = None  # the keeper (sshd -D): enter the host with nsenter -t PID -m -u -n

    @property
    def cidr(self) -> str:
        return f'{self.address}/{self.prefix}'


class Lab:
    """A lab of N hosts on one switch. Construct with a config (or keywords), then up()/down().

    Lab('s3', hosts=2, uplink='enp0s3').up() builds it; Lab.load('s3') attaches to a running one.
    """

    def __init__(self, name: str = 'lab', hosts: int = 2, uplink: str = 'eth0', *, config: LabConfig | None = None,
                 **options):
        self.config = (config or LabConfig(name=name, hosts=hosts, uplink=uplink, **options)).resolved()
        self.state_dir = Path(self.config.state_dir)
        self._state = self._read_state()
        self._children = []

    @classmethod
    def load(cls, name: str = 'lab', state_dir: str | None = None) -> 'Lab':
        """Attach to a lab that is up (or partly up): its config comes from its state file."""
        path = Path(state_dir).resolve() if state_dir else STATE_ROOT / name
        try:
            data = json.loads((path / 'state.json').read_text())
        except (OSError, ValueError):
            raise LabError(f'lab {name!r}: no state in {path} (is it up?)') from None
        return cls(config=LabConfig(**data['config']))

    # ---- names and paths
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def switch_ns(self) -> str:
        return f'{NS_PREFIX}{self.name}-sw'

    @property
    def client_ns(self) -> str:
        return f'{NS_PREFIX}{self.name}-lan'

    @property
    def client_address(self) -> str:
        return self.config.client

    @property
    def gateway(self) -> str:
        return self.config.gateway

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Network(self.config.subnet).prefixlen

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / 'inventory.yml'

    @property
    def ssh_config_path(self) -> Path:
        return self.state_dir / 'ssh_config'

    @property
    def key_path(self) -> Path:
        return self.state_dir / 'id_ed25519'

    @property
    def control_dir(self) -> Path:
        return self.state_dir / 'cp'

    @property
    def hosts(self) -> list:
        pids = {k.split(':', 1)[1]: r['pid'] for k, r in self._state.get('pids', {}).items() if k.startswith('keeper:')}
        return [LabHost(name, i, addr, self.prefix, self._host_ns(i), pids.get(name))
                for i, (name, addr) in enumerate(zip(self.config.names, self.config.addresses), start=1)]

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f'lab {self.name}: no host {name!r} (hosts: {", ".join(self.config.names)})')

    def _host_ns(self, index: int) -> str:
        # Indexed, not named: lets down() recognise our namespaces by pattern even without state.
        return f'{NS_PREFIX}{self.name}-h{index}'

    def _host_dir(self, host: LabHost) -> Path:
        return self.state_dir / 'hosts' / host.name

    def _namespaces(self) -> list:
        return [self.switch_ns, self.client_ns] + [h.netns for h in self.hosts]

    # ---- state file
    def _read_state(self) -> dict:
        try:
            return json.loads((self.state_dir / 'state.json').read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        tmp = self.state_dir / 'state.json.tmp'
        tmp.write_text(json.dumps(self._state, indent=2, sort_keys=True))
        tmp.replace(self.state_dir / 'state.json')

    def _record_pid(self, role: str, pid: int) -> None:
        self._state.setdefault('pids', {})[role] = {'pid': pid, 'start': _proc_start(pid)}

    # ---- up
    def up(self) -> 'Lab':
        """Build the lab; a lab that is already up with this config is left as it is (idempotent)."""
        with _Lock(self.state_dir) as lock:
            if self._healthy():
                return self
            self._down_locked()
            try:
                self._build()
            except BaseException:
                self._down_locked()  # leave nothing half-built behind
                lock.release(unlink=True)
                raise
        return self

    def _healthy(self) -> bool:
        state = self._read_state()
        if state.get('phase') != 'up' or state.get('config') != dataclasses.asdict(self.config):
            return False
        if not all(_alive(rec) for rec in state.get('pids', {}).values()):
            return False
        self._state = state
        return all(Path('/run/netns', ns).exists() for ns in self._namespaces())

    def _build(self) -> None:
        self.state_dir.mkdir(parents=True)
        self._state = {'version': STATE_VERSION, 'phase': 'building', 'config': dataclasses.asdict(self.config),
                       'namespaces': {}, 'pids': {}}
        self._write_state()  # first, so that down() after a crash knows what to look for
        self._write_keys_and_files()
        self._make_namespaces()
        self._wire_switch()
        for host in self.hosts:
            self._wire_host(host)
        self._wire_client()
        for host in self.hosts:
            self._start_keeper(host)
        self._write_state()
        with ThreadPoolExecutor(max_workers=min(8, len(self.hosts))) as pool:
            pids = list(pool.map(self._finish_host, self.hosts))
        for host, (ovsdb, vswitchd) in zip(self.hosts, pids):
            self._record_pid(f'ovsdb-server:{host.name}', ovsdb)
            self._record_pid(f'ovs-vswitchd:{host.name}', vswitchd)
        self._write_ssh_config()
        self._write_inventory()
        self._state['phase'] = 'up'
        self._write_state()

    def _write_keys_and_files(self) -> None:
        # Unix socket paths are limited to 107 bytes; ssh adds a 17-byte temporary suffix to
        # "<control_dir>/<address>" while it creates a master.
        _check(len(str(self.control_dir)) + 1 + 15 + 17 <= 107,
               f'state_dir {self.state_dir}: too long for ssh control sockets; pass a shorter --state-dir')
        self.control_dir.mkdir(mode=0o700)
        run([_tool('ssh-keygen'), '-q', '-t', 'ed25519', '-N', '', '-C', f'netplumb-lab-{self.name}',
             '-f', str(self.key_path)])
        (self.state_dir / 'authorized_keys').write_text(Path(f'{self.key_path}.pub').read_text())
        known = []
        for host in self.hosts:
            hdir = self._host_dir(host)
            for sub, _target in HOST_DIR_BINDS:
                (hdir / sub).mkdir(parents=True)
            run([_tool('ssh-keygen'), '-q', '-t', 'ed25519', '-N', '', '-C', host.name,
                 '-f', str(hdir / 'ssh_host_ed25519_key')])
            pub = (hdir / 'ssh_host_ed25519_key.pub').read_text().split()
            known.append(f'{host.address} {pub[0]} {pub[1]}\n')
            self._write_host_files(host, hdir)
        (self.state_dir / 'known_hosts').write_text(''.join(known))

    def _write_host_files(self, host: LabHost, hdir: Path) -> None:
        names = '\n'.join(f'{h.address}\t{h.name}' for h in self.hosts)
        (hdir / 'hosts').write_text(f'127.0.0.1\tlocalhost\n{names}\n{self.gateway}\tgateway\n')
        # No DNS in the lab: a nameserver on the host's own loopback refuses at once, so fact
        # gathering and reverse lookups do not wait for timeouts.
        (hdir / 'resolv.conf').write_text('nameserver 127.0.0.1\noptions timeout:1 attempts:1\n')
        (hdir / 'hostname').write_text(f'{host.name}\n')
        (hdir / 'sshd_config').write_text(self._sshd_config(host, hdir))
        (hdir / 'keeper.sh').write_text(self._keeper_script(host, hdir))

    def _sshd_config(self, host: LabHost, hdir: Path) -> str:
        return '\n'.join([
            f'ListenAddress {host.address}:22',
            f'HostKey {hdir}/ssh_host_ed25519_key',
            f'PidFile {hdir}/sshd.pid',
            f'AuthorizedKeysFile {self.state_dir}/authorized_keys',
            'PermitRootLogin prohibit-password',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'UsePAM no',
            'UseDNS no',
            'StrictModes no',  # the state dir lives in a checkout whose modes we do not control
            'PrintMotd no',
            'MaxStartups 100:30:200',  # Ansible opens many sessions at once
            'MaxSessions 100',
            'Subsystem sftp internal-sftp',
            'LogLevel ERROR',
            '',
        ])

    def _keeper_script(self, host: LabHost, hdir: Path) -> str:
        q = shlex.quote
        lines = [
            '#!/bin/sh',
            f'# Keeper of lab host {host.name}: runs in netns {host.netns}, in fresh private mount and UTS',
            '# namespaces (made by unshare), so these binds and the hostname stay invisible to the root',
            '# namespace. It ends as sshd -D; its PID is how other processes enter this host.',
            'set -eu',
            'mkdir -p /run/sshd',  # sshd privilege separation directory (normally made by its service)
        ]
        for src, dst in HOST_DIR_BINDS:
            lines.append(f'mount --bind {q(str(hdir / src))} {dst}')
        for src, dst in HOST_FILE_BINDS:
            lines.append(f'mount --bind {q(str(hdir / src))} {dst}')
        lines += [
            f'printf %s {q(host.name)} >/proc/sys/kernel/hostname',
            f'exec {SSHD} -D -f {q(str(hdir / "sshd_config"))} -E {q(str(hdir / "sshd.log"))}',
            '',
        ]
        return '\n'.join(lines)

    def _make_namespaces(self) -> None:
        ip = _tool('ip')
        for ns in self._namespaces():
            run([ip, 'netns', 'add', ns])
            self._state['namespaces'][ns] = _inode(f'/run/netns/{ns}')
            self._write_state()

    def _wire_switch(self) -> None:
        ip, sw = _tool('ip'), self.switch_ns
        cmds = ['link set lo up',
                f'link add {BRIDGE} type bridge stp_state 0',
                f'link set {BRIDGE} up',
                f'address add {self.gateway}/{self.prefix} dev {BRIDGE}']
        # Veth pairs are created from inside the switch ns with the peer born in the host ns:
        # no lab interface ever appears in the root namespace (where an "eth0" already exists).
        ports = [(f'h{h.index}', h.netns, self.config.uplink) for h in self.hosts] + [('lan', self.client_ns, 'eth0')]
        for port, peer_ns, peer_name in ports:
            cmds += [f'link add {port} type veth peer name {peer_name} netns {peer_ns}',
                     f'link set {port} master {BRIDGE}',
                     f'link set {port} up']
        run([ip, '-n', sw, '-batch', '-'], input='\n'.join(cmds) + '\n')
        # br_netfilter is loaded: bridged IPv4 would traverse this namespace's iptables. A switch
        # does not filter, so turn that off here (per-namespace sysctls) and keep FORWARD open.
        run([ip, 'netns', 'exec', sw, _tool('sysctl'), '-q', '-w', 'net.bridge.bridge-nf-call-iptables=0',
             'net.bridge.bridge-nf-call-ip6tables=0', 'net.bridge.bridge-nf-call-arptables=0'])
        run([ip, 'netns', 'exec', sw, _tool('iptables'), '-w', '-P', 'FORWARD', 'ACCEPT'])

    def _wire_endpoint(self, ns: str, ifname: str, address: str) -> None:
        cmds = ['link set lo up', f'link set {ifname} up',
                f'address add {address}/{self.prefix} dev {ifname}',
                f'route add default via {self.gateway} dev {ifname}']
        run([_tool('ip'), '-n', ns, '-batch', '-'], input='\n'.join(cmds) + '\n')

    def _wire_host(self, host: LabHost) -> None:
        self._wire_endpoint(host.netns, self.config.uplink, host.address)
        # Lab artefact: once the uplink is a port of a userspace-datapath OVS bridge, the kernel
        # would still answer ARP for the moved address on the old NIC; arp_ignore=1 stops that.
        run([_tool('ip'), 'netns', 'exec', host.netns, _tool('sysctl'), '-q', '-w',
             'net.ipv4.conf.all.arp_ignore=1'])

    def _wire_client(self) -> None:
        self._wire_endpoint(self.client_ns, 'eth0', self.client_address)

    def _start_keeper(self, host: LabHost) -> None:
        hdir = self._host_dir(host)
        log = open(hdir / 'keeper.log', 'wb')  # pylint: disable=consider-using-with  # handed to the child
        # ip netns exec and unshare both exec (no fork), so the Popen PID ends up being sshd's PID.
        proc = subprocess.Popen(  # pylint: disable=consider-using-with  # a daemon that outlives this call
            [_tool('ip'), 'netns', 'exec', host.netns, _tool('unshare'), '--mount', '--uts', '--propagation',
             'private', '/bin/sh', str(hdir / 'keeper.sh')],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd='/', start_new_session=True)
        log.close()
        self._children.append(proc)
        self._record_pid(f'keeper:{host.name}', proc.pid)

    def _finish_host(self, host: LabHost) -> tuple:
        """Wait for the keeper (sshd listening means the binds are done), then start this host's OVS."""
        host = self.host(host.name)  # carries the keeper PID now
        self._wait_keeper(host)
        return self._start_ovs(host)

    def _wait_keeper(self, host: LabHost) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _listening(host.pid, host.address, 22):
            if _proc_start(host.pid) is None or time.monotonic() > deadline:
                log = (self._host_dir(host) / 'keeper.log').read_text(errors='replace').strip()
                raise LabError(f'host {host.name}: keeper/sshd did not come up: {log or "no output"}')
            time.sleep(0.01)

    def host_argv(self, host: LabHost | str, argv: list) -> list:
        """The argv that runs argv inside a host's namespaces (mount, UTS, net)."""
        host = self.host(host) if isinstance(host, str) else host
        _check(host.pid, f'host {host.name}: not up')
        return [_tool('nsenter'), '-t', str(host.pid), '-m', '-u', '-n', *argv]

    def _start_ovs(self, host: LabHost) -> tuple:
        # Runs inside the host's namespaces, so the default paths (/etc/openvswitch/conf.db,
        # /run/openvswitch/db.sock) are the host's own bound directories, not the root OVS's.
        sock = 'unix:/run/openvswitch/db.sock'
        logs = ['-vconsole:emer', '-vsyslog:off', '-vfile:info']
        hdir = self._host_dir(host)
        run(self.host_argv(host, [_tool('ovsdb-tool'), 'create', '/etc/openvswitch/conf.db', OVS_SCHEMA]))
        run(self.host_argv(host, [_tool('ovsdb-server'), '/etc/openvswitch/conf.db', '--remote=punix:/run/openvswitch/db.sock',
                                  '--remote=db:Open_vSwitch,Open_vSwitch,manager_options',
                                  '--pidfile=/run/openvswitch/ovsdb-server.pid',
                                  '--log-file=/var/log/openvswitch/ovsdb-server.log', '--detach', '--no-chdir', *logs]))
        # TSO must be on before vswitchd starts (it reads it once): without it TCP through veths on
        # the userspace datapath arrives with bad checksums.
        run(self.host_argv(host, [_tool('ovs-vsctl'), '--no-wait', '--db', sock, '--', 'init', '--', 'set',
                                  'Open_vSwitch', '.', 'other_config:userspace-tso-enable=true',
                                  f'external_ids:system-id={self.name}-{host.name}',
                                  f'external_ids:hostname={host.name}', f'ovs_version={_ovs_version()}']))
        run(self.host_argv(host, [_tool('ovs-vswitchd'), sock, '--pidfile=/run/openvswitch/ovs-vswitchd.pid',
                                  '--log-file=/var/log/openvswitch/ovs-vswitchd.log', '--detach', '--no-chdir', *logs]))
        return (int((hdir / 'run' / 'ovsdb-server.pid').read_text()),
                int((hdir / 'run' / 'ovs-vswitchd.pid').read_text()))

    # ---- generated client files
    def proxy_command(self) -> str:
        """ssh ProxyCommand: a relay run in the switch namespace (the root namespace has no lab address)."""
        return shlex.join([_tool('ip'), 'netns', 'exec', self.switch_ns, sys.executable, str(Path(__file__).resolve()),
                           'relay']) + ' %h %p'

    def ssh_options(self) -> list:
        """ssh -o options shared by the ssh config and the inventory (besides the control socket)."""
        return [f'ProxyCommand={self.proxy_command()}', f'UserKnownHostsFile={self.state_dir}/known_hosts',
                'StrictHostKeyChecking=yes', 'IdentitiesOnly=yes', 'BatchMode=yes', 'LogLevel=ERROR']

    def _write_ssh_config(self) -> None:
        lines = []
        for host in self.hosts:
            lines += [f'Host {host.name} {host.address}', f'  HostName {host.address}', '  User root',
                      f'  IdentityFile {self.key_path}']
            lines += ['  ' + ' '.join(opt.split('=', 1)) for opt in self.ssh_options()]
            lines += [f'  ControlPath {self.control_dir}/%h', '  ControlMaster auto', '  ControlPersist 60s', '']
        self.ssh_config_path.write_text('\n'.join(lines))

    def _write_inventory(self) -> None:
        common = ' '.join(shlex.quote(f'-o{opt}') for opt in self.ssh_options())
        group_vars = {
            'ansible_user': 'root',
            'ansible_ssh_private_key_file': str(self.key_path),
            'ansible_ssh_common_args': common,
            # ControlPersist masters live in the lab state dir, so down() can find and close them
            # (an open master keeps the switch namespace alive through its relay).
            'ansible_ssh_args': '-o ControlMaster=auto -o ControlPersist=60s',
            'ansible_control_path_dir': str(self.control_dir),
            'ansible_pipelining': True,
            'ansible_python_interpreter': self.config.python_interpreter,
            'lab_name': self.name,
            'lab_gateway': self.gateway,
            'lab_prefix': self.prefix,
            'lab_uplink': self.config.uplink,
            'lab_switch_ns': self.switch_ns,
            'lab_client_ns': self.client_ns,
            'lab_client_address': self.client_address,
        }
        out = ['# Generated by lab/lab.py for lab ' + self.name + '; rewritten by every "up".', 'all:',
               '  children:', f'    {self.config.group}:', '      vars:']
        out += [f'        {k}: {json.dumps(v)}' for k, v in group_vars.items()]
        out.append('      hosts:')
        for host in self.hosts:
            out.append(f'        {host.name}:')
            hvars = {'ansible_host': host.address, 'lab_address': host.address, 'lab_cidr': host.cidr,
                     'lab_index': host.index, 'lab_netns': host.netns, 'lab_keeper_pid': host.pid}
            out += [f'          {k}: {json.dumps(v)}' for k, v in hvars.items()]
        self.inventory_path.write_text('\n'.join(out) + '\n')

    # ---- down
    def down(self) -> None:
        """Remove everything the lab made; works on a partial or crashed lab and when nothing is there."""
        with _Lock(self.state_dir) as lock:
            self._down_locked()
            lock.release(unlink=True)

    def _down_locked(self) -> None:
        state = self._read_state() or self._state
        namespaces = self._our_namespaces(state)
        inodes = {i for i in state.get('namespaces', {}).values() if i}
        inodes |= {i for i in (_inode(f'/run/netns/{ns}') for ns in namespaces) if i}
        inodes -= {_inode('/proc/1/ns/net'), _inode('/proc/self/ns/net')}  # never the root ns
        self._close_control_masters()
        victims = {r['pid'] for r in state.get('pids', {}).values() if _alive(r)}
        victims |= set(self._pidfile_pids())
        victims |= set(_pids_in_netns(inodes))
        _terminate(victims)
        for ns in namespaces:
            run([_tool('ip'), 'netns', 'delete', ns], check=False)
        for proc in self._children:
            proc.poll()
        self._children = []
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self._state = {}

    def _our_namespaces(self, state: dict) -> list:
        # The state's list, plus whatever `ip netns` shows that matches our naming (state lost/partial).
        pattern = re.compile(rf'^{re.escape(NS_PREFIX + self.name)}-(sw|lan|h\d+)$')
        listed = [line.split()[0] for line in run([_tool('ip'), 'netns', 'list']).stdout.splitlines() if line.strip()]
        return sorted(set(state.get('namespaces', {})) | set(self._namespaces()) | {ns for ns in listed if pattern.match(ns)})

    def _close_control_masters(self) -> None:
        if not self.control_dir.is_dir():
            return
        for sock in self.control_dir.iterdir():
            if sock.is_socket():
                run([_tool('ssh'), '-o', f'ControlPath={sock}', '-O', 'exit', 'lab-host'], check=False, timeout=10)

    def _pidfile_pids(self) -> list:
        pids = []
        for pidfile in self.state_dir.glob('hosts/*/run/*.pid'):
            try:
                pids.append(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                continue
        # A stale pidfile's PID may belong to another process by now: only OVS daemons qualify.
        return [p for p in pids if _comm(p).startswith(('ovsdb-server', 'ovs-vswitchd'))]

    # ---- status and exec
    def status(self) -> dict:
        """What is up: per host keeper/OVS/sshd, and whether the switch and client namespaces exist."""
        state = self._read_state()
        self._state = state or self._state
        pids = state.get('pids', {})
        hosts = []
        for host in self.hosts:
            alive = {role: _alive(pids[f'{role}:{host.name}']) if f'{role}:{host.name}' in pids else False
                     for role in ('keeper', 'ovsdb-server', 'ovs-vswitchd')}
            hosts.append({'name': host.name, 'address': host.cidr, 'netns': host.netns, 'pid': host.pid,
                          'netns_exists': Path('/run/netns', host.netns).exists(),
                          'sshd_listening': bool(host.pid) and _listening(host.pid, host.address, 22), **alive})
        return {'name': self.name, 'phase': state.get('phase', 'down'), 'state_dir': str(self.state_dir),
                'inventory': str(self.inventory_path), 'ssh_config': str(self.ssh_config_path),
                'switch_ns': self.switch_ns, 'switch_exists': Path('/run/netns', self.switch_ns).exists(),
                'client_ns': self.client_ns, 'client_address': self.client_address, 'gateway': self.gateway,
                'uplink': self.config.uplink, 'hosts': hosts}

    def exec_argv(self, target: str, argv: list) -> list:
        """argv run inside a host (by name), or in the "switch" or "client" namespace."""
        if target in ('switch', 'client'):
            return [_tool('ip'), 'netns', 'exec', self.switch_ns if target == 'switch' else self.client_ns, *argv]
        if not self._state:
            self._state = self._read_state()
        return self.host_argv(target, argv)

    def exec(self, target: str, argv: list, *, check: bool = True, timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run argv inside a host / "switch" / "client"; returns the CompletedProcess (text output)."""
        return run(self.exec_argv(target, argv), check=check, timeout=timeout, input=input)

    def ssh_argv(self, host: str, argv: list) -> list:
        """argv for running a command on a host over real SSH (through the relay) from the controller."""
        return [_tool('ssh'), '-F', str(self.ssh_config_path), host, '--', shlex.join(argv)]

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


@functools.lru_cache(maxsize=1)
def _ovs_version() -> str:
    """The installed OVS version, recorded in the Open_vSwitch row as ovs-ctl would (tools show it)."""
    out = run([_tool('ovs-vswitchd'), '--version']).stdout.split('\n', 1)[0]
    return out.rsplit(' ', 1)[-1] or 'unknown'


def _comm(pid: int) -> str:
    try:
        return Path(f'/proc/{pid}/comm').read_text().strip()
    except OSError:
        return ''


# --------------------------------------------------------------------------- ssh relay

def relay(host: str, port: int) -> int:
    """stdin/stdout <-> TCP host:port. Run by ssh as ProxyCommand inside the switch namespace."""
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        print(f'lab relay: {host}:{port}: {exc}', file=sys.stderr)
        return 255
    sock.settimeout(None)

    def upstream():
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)  # pass ssh's EOF on, keep reading the answer
                    return
                sock.sendall(data)
        except OSError:
            return  # the connection went away: the main loop sees it too

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return 0
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        return 0  # ssh closed its end (or the host reset the connection): nothing left to relay


# --------------------------------------------------------------------------- CLI

def _config_from_args(args) -> LabConfig:
    cfg = LabConfig.from_file(args.config) if args.config else LabConfig()
    for field in ('name', 'hosts', 'subnet', 'gateway', 'client', 'uplink', 'group', 'state_dir', 'python_interpreter'):
        value = getattr(args, field, None)
        if value is not None:
            setattr(cfg, field, value)
    if args.names:
        cfg.names = args.names.split(',')
    if args.addresses:
        cfg.addresses = args.addresses.split(',')
    if args.hosts is not None and not args.names:
        cfg.names = None
    return cfg


def _lab_for(args) -> Lab:
    """The lab named on the command line: from its state if there is one, else from its name."""
    try:
        return Lab.load(args.name or 'lab', args.state_dir)
    except LabError:
        return Lab(config=LabConfig(name=args.name or 'lab', state_dir=args.state_dir))


def _cmd_up(args) -> int:
    t0 = time.monotonic()
    lab = Lab(config=_config_from_args(args)).up()
    took = time.monotonic() - t0
    if args.json:
        print(json.dumps(lab.status(), indent=2))
    else:
        print(f'lab {lab.name}: up in {took:.1f}s; inventory {lab.inventory_path}')
        for host in lab.hosts:
            print(f'  {host.name:10} {host.cidr:18} netns {host.netns} pid {host.pid}')
    return 0


def _cmd_down(args) -> int:
    lab = _lab_for(args)
    t0 = time.monotonic()
    lab.down()
    print(f'lab {lab.name}: down in {time.monotonic() - t0:.1f}s')
    return 0


def _cmd_status(args) -> int:
    status = _lab_for(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if status['phase'] == 'up' else 1
    print(f"lab {status['name']}: {status['phase']}  switch {status['switch_ns']}"
          f"{'' if status['switch_exists'] else ' (missing)'}  gateway {status['gateway']}  "
          f"client {status['client_ns']} {status['client_address']}")
    for h in status['hosts']:
        flags = ' '.join(f'{k}={"ok" if h[k] else "DOWN"}' for k in ('keeper', 'ovsdb-server', 'ovs-vswitchd', 'sshd_listening'))
        print(f"  {h['name']:10} {h['address']:18} {h['netns']:16} pid {h['pid']}  {flags}")
    if status['phase'] == 'up':
        print(f"  inventory {status['inventory']}\n  ssh -F {status['ssh_config']} {status['hosts'][0]['name']}")
    return 0 if status['phase'] == 'up' else 1


def _cmd_exec(args) -> int:
    argv = args.argv
    _check(argv, 'exec: give a command after --')
    lab = Lab.load(args.name or 'lab', args.state_dir)
    return subprocess.run(lab.exec_argv(args.host, argv), check=False).returncode


def _cmd_path(attr):
    def show(args) -> int:
        lab = Lab.load(args.name or 'lab', args.state_dir)
        print(getattr(lab, attr))
        return 0
    return show


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='lab.py', description='Multi-host namespace lab for netplumb.pipework.')
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--name', help='lab name (default "lab"); namespaces are np-NAME-*')
    common.add_argument('--state-dir', help='state directory (default <repo>/lab-state/NAME)')
    sub = parser.add_subparsers(dest='command', required=True)

    up = sub.add_parser('up', parents=[common], help='build the lab (no-op when it is up with this config)')
    up.add_argument('--config', help='JSON (or YAML) file with LabConfig keys; flags override it')
    up.add_argument('--hosts', type=int, help='number of hosts (default 2)')
    up.add_argument('--names', help='comma-separated host names (default host1..hostN)')
    up.add_argument('--uplink', help='uplink interface name inside the hosts (default eth0)')
    up.add_argument('--subnet', help='lab subnet with prefix (default 10.10.101.0/24)')
    up.add_argument('--addresses', help='comma-separated host addresses (default .105, .106, ...)')
    up.add_argument('--gateway', help='gateway address on the switch (default the last usable)')
    up.add_argument('--client', help='LAN client address (default .200)')
    up.add_argument('--group', help='inventory group of the hosts (default "lab")')
    up.add_argument('--python-interpreter', help='ansible_python_interpreter (default the project venv)')
    up.add_argument('--json', action='store_true', help='print the status as JSON')
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser('down', parents=[common], help='remove everything the lab made')
    down.set_defaults(func=_cmd_down)
    status = sub.add_parser('status', parents=[common], help='show the lab (exit 1 when not up)')
    status.add_argument('--json', action='store_true')
    status.set_defaults(func=_cmd_status)
    exe = sub.add_parser('exec', parents=[common], help='run a command in a host (or "switch", "client")')
    exe.add_argument('host')
    exe.add_argument('argv', nargs='*', help='the command (after --)')
    exe.set_defaults(func=_cmd_exec)
    for cmd, attr in (('inventory', 'inventory_path'), ('ssh-config', 'ssh_config_path')):
        sub.add_parser(cmd, parents=[common], help=f'print the path of the {attr}').set_defaults(func=_cmd_path(attr))
    rel = sub.add_parser('relay', help='internal: ssh ProxyCommand relay (runs in the switch namespace)')
    rel.add_argument('host')
    rel.add_argument('port', type=int)
    rel.set_defaults(func=lambda a: relay(a.host, a.port))
    return parser


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # "exec HOST [--name N] -- CMD...": options may follow HOST, everything after "--" is the command.
    command = []
    if argv[:1] == ['exec'] and '--' in argv:
        cut = argv.index('--')
        argv, command = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    if command:
        args.argv = command
    try:
        return args.func(args)
    except LabError as exc:
        print(f'lab.py: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
