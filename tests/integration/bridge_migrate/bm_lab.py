"""A throwaway 'host' network namespace whose uplink is a veth into a 'LAN' namespace (the gateway and a
LAN client), optionally with a private Open vSwitch (own ovsdb-server and ovs-vswitchd, userspace datapath)
running inside the host namespace. Nothing touches the root namespace's interfaces, addresses or routes.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VENV_BIN = os.path.join(os.environ.get('NP_VENV', os.path.join(REPO, '.build', 'venv')), 'bin')
# The module runs with Debian's python3 and its python3-pyroute2 0.7, as on a Debian 12 target host;
# VENV_PYTHON (pyroute2 0.9) is the other supported version.
TARGET_PYTHON = os.environ.get('NP_TARGET_PYTHON', '/usr/bin/python3')
VENV_PYTHON = os.path.join(VENV_BIN, 'python')


def ansible_env():
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(REPO, '.build', 'collections'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_HOST_KEY_CHECKING': 'False',
        'ANSIBLE_LOCALHOST_WARNING': 'False',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False',
        'ANSIBLE_DEPRECATION_WARNINGS': 'False',
    })
    return env


MODULE = 'netplumb.pipework.host_bridge_migrate'
STATE_DIR = '/run/netplumb-pipework/bridge_migrate'
VSWITCH_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'

HOST_V4 = '192.168.1.102'
HOST_V4_2 = '192.168.1.103'
GW_V4 = '192.168.1.1'
CLIENT_V4 = '192.168.1.50'
HOST_V6 = '2001:db8:1::102'
GW_V6 = '2001:db8:1::1'


def sh(argv, ns=None, check=True, timeout=60):
    if ns:
        argv = ['ip', 'netns', 'exec', ns] + list(argv)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError('%s -> %d\n%s%s' % (' '.join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc


def ipj(ns, *args):
    return json.loads(sh(['ip', '-j'] + list(args), ns=ns).stdout or '[]')


class Lab:
    def __init__(self, uplink='eth0', mtu=1400, ovs=False):
        tag = secrets.token_hex(3)
        self.host = 'npbmh' + tag
        self.lan = 'npbml' + tag
        self.uplink = uplink
        self.mtu = mtu
        self.mac = '02:%s' % ':'.join('%02x' % b for b in secrets.token_bytes(5))
        self.ovs = ovs
        self.ovsdir = None
        self.db = None
        self.inode = None

    # ---- set-up / tear-down ----
    def up(self):
        sh(['ip', 'netns', 'add', self.host])
        sh(['ip', 'netns', 'add', self.lan])
        self.inode = os.stat('/run/netns/%s' % self.host).st_ino
        for ns in (self.host, self.lan):
            sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
        sh(['ip', '-n', self.host, 'link', 'add', self.uplink, 'mtu', str(self.mtu), 'address', self.mac,
            'type', 'veth', 'peer', 'name', 'lan0', 'mtu', str(self.mtu), 'netns', self.lan])
        h, l = self.host, self.lan
        for argv in (
            ['link', 'set', self.uplink, 'up'],
            ['addr', 'add', HOST_V4 + '/24', 'dev', self.uplink],
            ['addr', 'add', HOST_V4_2 + '/24', 'dev', self.uplink, 'label', self.uplink + ':1'],
            ['-6', 'addr', 'add', HOST_V6 + '/64', 'dev', self.uplink, 'nodad'],
            ['route', 'add', 'default', 'via', GW_V4, 'dev', self.uplink, 'metric', '50'],
            ['route', 'add', '10.9.0.0/16', 'via', GW_V4, 'src', HOST_V4, 'table', '100'],
            ['route', 'add', '172.16.5.0/24', 'dev', self.uplink, 'scope', 'link', 'metric', '20'],
            ['-6', 'route', 'add', 'default', 'via', GW_V6, 'dev', self.uplink, 'metric', '1024'],
            ['-6', 'route', 'add', '2001:db8:99::/64', 'via', GW_V6, 'metric', '512'],
        ):
            sh(['ip', '-n', h] + argv)
        for argv in (
            ['link', 'set', 'lan0', 'up'],
            ['addr', 'add', GW_V4 + '/24', 'dev', 'lan0'],
            ['addr', 'add', CLIENT_V4 + '/24', 'dev', 'lan0'],
            ['-6', 'addr', 'add', GW_V6 + '/64', 'dev', 'lan0', 'nodad'],
        ):
            sh(['ip', '-n', l] + argv)
        if self.ovs:
            self._ovs_up()
        self.settle(self.uplink)
        return self

    def settle(self, dev, timeout=15):
        """Wait until IPv6 duplicate address detection is over on ``dev`` (no tentative address)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            links = ipj(self.host, 'addr', 'show', 'dev', dev)
            if links and not any(a.get('tentative') for a in links[0].get('addr_info', [])):
                return
            time.sleep(0.1)

    def _ovs_up(self):
        self.ovsdir = tempfile.mkdtemp(prefix='npbm-ovs-')
        d = self.ovsdir
        env = ['env', 'OVS_RUNDIR=' + d, 'OVS_LOGDIR=' + d, 'OVS_DBDIR=' + d]
        sh(['ovsdb-tool', 'create', d + '/conf.db', VSWITCH_SCHEMA])
        sh(env + ['ovsdb-server', d + '/conf.db', '--remote=punix:' + d + '/db.sock', '--pidfile=' + d + '/ovsdb.pid',
                  '--unixctl=' + d + '/ovsdb.ctl', '--log-file=' + d + '/ovsdb.log', '-vconsole:off', '--detach',
                  '--no-chdir'])
        self.db = 'unix:' + d + '/db.sock'
        sh(['ovs-vsctl', '--db=' + self.db, '--no-wait', 'init'])
        sh(['ovs-vsctl', '--db=' + self.db, '--no-wait', 'set', 'Open_vSwitch', '.',
            'other_config:userspace-tso-enable=true'])
        sh(env + ['ovs-vswitchd', self.db, '--pidfile=' + d + '/vswitchd.pid', '--unixctl=' + d + '/vswitchd.ctl',
                  '--log-file=' + d + '/vswitchd.log', '-vconsole:off', '--detach', '--no-chdir'], ns=self.host)

    def records(self):
        return glob.glob(os.path.join(STATE_DIR, 'netns-%d.*' % self.inode)) if self.inode else []

    def down(self):
        record = self.record()
        if record and record.get('pid'):
            _kill_revert(record['pid'], record.get('token'))
        for pidfile in ('vswitchd.pid', 'ovsdb.pid'):
            if self.ovsdir:
                _kill_pidfile(os.path.join(self.ovsdir, pidfile))
        for ns in (self.host, self.lan):
            sh(['ip', 'netns', 'del', ns], check=False)
        for path in self.records():
            os.unlink(path)
        if self.ovsdir:
            shutil.rmtree(self.ovsdir, ignore_errors=True)

    # ---- the record ----
    def record_path(self):
        return os.path.join(STATE_DIR, 'netns-%d.%s.json' % (self.inode, self.uplink))

    def record(self):
        try:
            with open(self.record_path()) as f:
                return json.load(f)
        except (IOError, ValueError):
            return None

    def wait_record_status(self, status, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.record()
            if record and record.get('status') == status:
                return record
            time.sleep(0.25)
        raise AssertionError('record never reached %s: %r' % (status, self.record()))

    # ---- state dumps ----
    def link(self, dev):
        links = ipj(self.host, '-d', 'link', 'show', 'dev', dev)
        return links[0] if links else None

    def dump(self, dev):
        """Everything about ``dev`` that state=absent must restore exactly."""
        link = self.link(dev)
        addrs = ipj(self.host, 'addr', 'show', 'dev', dev)[0]['addr_info']
        routes = []
        for fam in ('-4', '-6'):
            for r in ipj(self.host, fam, 'route', 'show', 'table', 'all'):
                if r.get('dev') == dev or any(nh.get('dev') == dev for nh in r.get('nexthops') or []):
                    routes.append(r)
        return {
            'mtu': link['mtu'], 'address': link['address'], 'master': link.get('master'),
            'flags': sorted(link['flags']), 'operstate': link['operstate'], 'promiscuity': link.get('promiscuity'),
            'addresses': sorted((json.dumps(a, sort_keys=True) for a in addrs)),
            'routes': sorted(json.dumps(r, sort_keys=True) for r in routes),
        }

    def global_addresses(self, dev):
        links = ipj(self.host, 'addr', 'show', 'dev', dev, 'scope', 'global')
        return sorted('%s/%s' % (a['local'], a['prefixlen']) for a in (links[0]['addr_info'] if links else []) if 'local' in a)

    def bridge_exists(self, bridge):
        return sh(['ip', 'link', 'show', 'dev', bridge], ns=self.host, check=False).returncode == 0

    def ovs_ports(self, bridge):
        return sh(['ovs-vsctl', '--db=' + self.db, 'list-ports', bridge], ns=self.host).stdout.split()

    # ---- traffic, from the LAN namespace to the host ----
    def ping(self, address, count=1):
        fam = '-6' if ':' in address else '-4'
        return sh(['ping', fam, '-n', '-c', str(count), '-W', '2', address], ns=self.lan, check=False).returncode == 0

    def tcp(self, address=HOST_V4):
        """The host listens (python socket), the LAN client connects and must read the host's token."""
        token = 'np-%s' % secrets.token_hex(4)
        port = 20000 + secrets.randbelow(20000)
        fam = 'AF_INET6' if ':' in address else 'AF_INET'
        server = ('import socket,sys\n'
                  's=socket.socket(socket.%s);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n'
                  's.bind((sys.argv[1],int(sys.argv[2])));s.listen(1);s.settimeout(10)\n'
                  'print("ready",flush=True)\n'
                  'c,_=s.accept();c.sendall(sys.argv[3].encode());c.close()\n' % fam)
        client = ('import socket,sys\n'
                  'c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n'
                  'print(c.recv(100).decode())\n')
        proc = subprocess.Popen(['ip', 'netns', 'exec', self.host, 'python3', '-c', server, address, str(port), token],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            proc.stdout.readline()
            got = sh(['python3', '-c', client, address, str(port)], ns=self.lan, check=False, timeout=20)
            return token in got.stdout
        finally:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- running the module through ansible-playbook inside the host namespace ----
    def play(self, tasks, check=False, diff=False, python=TARGET_PYTHON, timeout=300):
        """Run tasks as a play (connection local, in the host namespace); return (rc, output, results)
        where results maps each task's register name to its registered result."""
        workdir = tempfile.mkdtemp(prefix='npbm-play-')
        out_path = os.path.join(workdir, 'results.json')
        names = [t['register'] for t in tasks if 'register' in t]
        save = {'name': 'save results', 'ansible.builtin.copy': {
            'content': '{{ {%s} | to_json }}' % ', '.join("'%s': (%s | default(None))" % (n, n) for n in names),
            'dest': out_path}, 'check_mode': False}
        play = [{'hosts': 'localhost', 'gather_facts': False, 'vars': {'ansible_python_interpreter': python},
                 'tasks': [{'block': tasks, 'always': [save]}]}]
        path = os.path.join(workdir, 'play.yml')
        with open(path, 'w') as f:
            json.dump(play, f)
        argv = ['ip', 'netns', 'exec', self.host, os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,',
                '-c', 'local', path]
        if check:
            argv.append('--check')
        if diff:
            argv.append('--diff')
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), cwd=REPO, timeout=timeout,
                                  check=False)
            try:
                with open(out_path) as f:
                    results = json.load(f)
            except (IOError, ValueError):
                raise AssertionError('no results:\n%s\n%s' % (proc.stdout, proc.stderr))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return proc.returncode, proc.stdout + proc.stderr, results

    def migrate(self, check=False, diff=False, python=TARGET_PYTHON, **args):
        """One host_bridge_migrate task; return its result (failed or not)."""
        params = {'uplink': self.uplink}
        if self.db:
            params['database_socket'] = self.db
        params.update(args)
        task = {'name': 'host_bridge_migrate', MODULE: params, 'register': 'r', 'ignore_errors': True}
        rc, out, results = self.play([task], check=check, diff=diff, python=python)
        result = results['r']
        result['_output'] = out
        return result


def _kill_revert(pid, token):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            argv = f.read().split(b'\0')
    except (IOError, OSError):
        return
    if token and token.encode() in argv:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _kill_pidfile(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (IOError, OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    for dummy in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def direct(lab, check=False, diff=False, python=VENV_PYTHON, **args):
    """Run the module file directly (no Ansible controller): fast, for the many small checks."""
    params = {'uplink': lab.uplink}
    if lab.db:
        params['database_socket'] = lab.db
    params.update(args)
    params['_ansible_check_mode'] = check
    params['_ansible_diff'] = diff
    fd, path = tempfile.mkstemp(prefix='npbm-args-', suffix='.json')
    with os.fdopen(fd, 'w') as f:
        json.dump({'ANSIBLE_MODULE_ARGS': params}, f)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, '.build', 'collections'))
    try:
        proc = subprocess.run(['ip', 'netns', 'exec', lab.host, python,
                               os.path.join(REPO, 'plugins', 'modules', 'host_bridge_migrate.py'), path],
                              capture_output=True, text=True, env=env, timeout=120, check=False)
    finally:
        os.unlink(path)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('module printed no JSON:\n%s\n%s' % (proc.stdout, proc.stderr))
    return result


def warning_texts(result):
    """Warnings as text, whether Ansible gave them as strings or (2.19, module run directly) as events."""
    out = []
    for w in result.get('warnings') or []:
        if isinstance(w, dict):
            w = (w.get('event') or {}).get('msg') or w.get('msg') or str(w)
        out.append(w)
    return out
