# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Open vSwitch database access shared by every module: one read, one write transaction, one read-back.

Reads use ``ovs-vsctl --format=json`` (structured output, never prose); writes join every change of a
run into ONE ``ovs-vsctl ... -- ... -- ...`` call, so OVS applies them atomically (a port and its tag
arrive together, never untagged for a moment). ``ovs-vsctl`` exits 0 even when ovs-vswitchd could not
set an interface up (for instance a ``system`` bridge with no kernel module), so every interface a run
adds is read back and its ``ofport``/``error`` checked.
"""

from __future__ import annotations

import json

from ansible_collections.netplumb.pipework.plugins.module_utils.common.errors import PipeworkError

DEFAULT_DB_SOCKET = 'unix:/var/run/openvswitch/db.sock'
# ovs-docker's keys, so `ovs-docker del-port` and other tools recognise our ports.
EXT_CONTAINER_ID = 'container_id'
EXT_CONTAINER_IFACE = 'container_iface'
# Our own keys: who owns the row, and the operator's handle for the target (a container name).
EXT_OWNER = 'netplumb_owner'
EXT_TARGET = 'netplumb_target'
OWNER = 'netplumb.pipework'

_BRIDGE_COLUMNS = '_uuid,name,ports,datapath_type,external_ids'
_PORT_COLUMNS = '_uuid,name,interfaces,tag,trunks,vlan_mode,external_ids'
_IFACE_COLUMNS = '_uuid,name,type,ofport,error,external_ids'


def decode(value):
    """Turn an OVSDB JSON datum into Python: sets -> lists, maps -> dicts, uuids -> strings."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, payload = value
        if kind == 'set':
            return [decode(v) for v in payload]
        if kind == 'map':
            return dict((decode(k), decode(v)) for k, v in payload)
        if kind in ('uuid', 'named-uuid'):
            return payload
    return value


def scalar(value):
    """An optional column (an empty set when unset) as a value or None."""
    if isinstance(value, list):
        if not value:
            return None
        if len(value) == 1:
            return value[0]
    return value


def parse_table(text):
    """Parse one ``--format=json`` table into a list of dicts keyed by heading."""
    try:
        doc = json.loads(text)
        headings = doc['headings']
        return [dict(zip(headings, (decode(v) for v in row))) for row in doc['data']]
    except (ValueError, KeyError, TypeError) as exc:
        raise PipeworkError('ovs-vsctl returned output that is not a JSON table: %s (%r)' % (exc, text[:200]))


def quote(value):
    """Quote a string for an ovs-vsctl column value (C-style string, as ovs-vsctl parses it)."""
    return json.dumps(str(value))


class OvsState:
    """A snapshot of the Bridge, Port and Interface tables, indexed by name."""

    def __init__(self, bridges, ports, interfaces):
        port_by_uuid = dict((p['_uuid'], p) for p in ports)
        iface_by_uuid = dict((i['_uuid'], i) for i in interfaces)
        self.bridges = {}
        self.ports = {}
        self.interfaces = {}
        for iface in interfaces:
            self.interfaces[iface['name']] = {
                'type': iface.get('type') or '',
                'ofport': scalar(iface.get('ofport')),
                'error': scalar(iface.get('error')),
                'external_ids': iface.get('external_ids') or {},
            }
        for port in ports:
            self.ports[port['name']] = {
                'bridge': None,
                'interfaces': [iface_by_uuid[u]['name'] for u in _as_list(port.get('interfaces')) if u in iface_by_uuid],
                'tag': scalar(port.get('tag')),
                'trunks': sorted(_as_list(port.get('trunks'))),
                'vlan_mode': scalar(port.get('vlan_mode')),
                'external_ids': port.get('external_ids') or {},
            }
        for bridge in bridges:
            names = [port_by_uuid[u]['name'] for u in _as_list(bridge.get('ports')) if u in port_by_uuid]
            self.bridges[bridge['name']] = {
                'datapath_type': bridge.get('datapath_type') or 'system',
                'ports': sorted(names),
                'external_ids': bridge.get('external_ids') or {},
            }
            for name in names:
                self.ports[name]['bridge'] = bridge['name']

    def port_of_interface(self, iface_name):
        for name, port in self.ports.items():
            if iface_name in port['interfaces']:
                return name
        return None

    def interfaces_where(self, **external_ids):
        """Names of interfaces whose external_ids contain all the given key/values."""
        found = []
        for name, iface in self.interfaces.items():
            ids = iface['external_ids']
            if all(ids.get(k) == v for k, v in external_ids.items()):
                found.append(name)
        return sorted(found)


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


class Vsctl:
    """Runs ovs-vsctl through a runner ``run(argv) -> (rc, stdout, stderr)`` (Ansible's run_command)."""

    def __init__(self, run, database_socket=None, timeout=30):
        self._run = run
        self.database_socket = database_socket or DEFAULT_DB_SOCKET
        self.timeout = timeout

    def _base(self):
        return ['ovs-vsctl', '--db=%s' % self.database_socket, '--timeout=%d' % self.timeout]

    def read_state(self):
        """Bridge, Port and Interface tables in one ovs-vsctl call."""
        argv = self._base() + [
            '--format=json',
            '--', '--columns=%s' % _BRIDGE_COLUMNS, 'list', 'Bridge',
            '--', '--columns=%s' % _PORT_COLUMNS, 'list', 'Port',
            '--', '--columns=%s' % _IFACE_COLUMNS, 'list', 'Interface',
        ]
        rc, out, err = self._run(argv)
        if rc != 0:
            raise PipeworkError('cannot read the Open vSwitch database at %s: %s'
                                % (self.database_socket, (err or out).strip()), stderr=err)
        docs = [line for line in out.splitlines() if line.strip()]
        if len(docs) != 3:
            raise PipeworkError('ovs-vsctl returned %d tables, expected 3' % len(docs))
        return OvsState(parse_table(docs[0]), parse_table(docs[1]), parse_table(docs[2]))

    def transact(self, commands):
        """Apply a list of ovs-vsctl commands (each a list of words) as ONE transaction."""
        if not commands:
            return ''
        argv = self._base()
        for command in commands:
            argv += ['--'] + list(command)
        rc, out, err = self._run(argv)
        if rc != 0:
            raise PipeworkError('Open vSwitch refused the change: %s' % (err or out).strip(),
                                stderr=err, command=argv)
        return err

    def check_interfaces(self, names, transact_stderr=''):
        """Fail with OVS's own words unless every named interface got an ofport and has no error."""
        if not names:
            return
        state = self.read_state()
        problems = []
        for name in names:
            iface = state.interfaces.get(name)
            if iface is None:
                problems.append('%s: not in the Interface table' % name)
                continue
            ofport = iface['ofport']
            if iface['error'] or ofport is None or ofport == -1:
                problems.append('%s: %s' % (name, iface['error'] or 'no OpenFlow port assigned (ofport %s)' % ofport))
        if problems:
            said = (transact_stderr or '').strip()
            raise PipeworkError('Open vSwitch could not bring up %d interface(s): %s%s'
                                % (len(problems), '; '.join(problems),
                                   ('. ovs-vsctl said: %s' % said) if said else ''),
                                ovs_errors=problems, stderr=transact_stderr)


# Builders of single ovs-vsctl commands, to be joined into one transaction.

def cmd_add_bridge(name, datapath_type):
    return [['--may-exist', 'add-br', name], ['set', 'Bridge', name, 'datapath_type=%s' % datapath_type]]


def cmd_add_port(bridge, port, tag=None, iface_external_ids=None):
    cmds = [['add-port', bridge, port] + (['tag=%d' % tag] if tag else [])]
    for key, value in sorted((iface_external_ids or {}).items()):
        cmds.append(['set', 'Interface', port, 'external_ids:%s=%s' % (key, quote(value))])
    return cmds


def cmd_del_port(port):
    return [['--if-exists', 'del-port', port]]


def cmd_set_port_columns(port, tag=None, trunks=None, vlan_mode=None, external_ids=None):
    """Set or clear Port VLAN columns. ``tag=0`` and ``trunks=[]`` clear; None leaves a column alone."""
    cmds = []
    if tag is not None:
        cmds.append(['set', 'Port', port, 'tag=%d' % tag] if tag else ['clear', 'Port', port, 'tag'])
    if trunks is not None:
        if trunks:
            cmds.append(['set', 'Port', port, 'trunks=%s' % ','.join(str(t) for t in sorted(trunks))])
        else:
            cmds.append(['clear', 'Port', port, 'trunks'])
    if vlan_mode is not None:
        cmds.append(['set', 'Port', port, 'vlan_mode=%s' % vlan_mode] if vlan_mode else ['clear', 'Port', port, 'vlan_mode'])
    for key, value in sorted((external_ids or {}).items()):
        if value is None:
            cmds.append(['remove', 'Port', port, 'external_ids', key])
        else:
            cmds.append(['set', 'Port', port, 'external_ids:%s=%s' % (key, quote(value))])
    return cmds


def cmd_set_map_keys(table, record, column, mapping):
    """Set or remove keys of a map column (e.g. external_ids); a None value removes the key.

    Keys are quoted as well as values, so keys such as ``k8s.ovn.org/x`` or ``a:b`` stay one key.
    """
    cmds = []
    for key, value in sorted((mapping or {}).items()):
        if value is None:
            cmds.append(['remove', table, record, column, quote(key)])
        else:
            cmds.append(['set', table, record, '%s:%s=%s' % (column, quote(key), quote(value))])
    return cmds


def cmd_set_interface_external_ids(iface, external_ids):
    return [['set', 'Interface', iface, 'external_ids:%s=%s' % (k, quote(v))] for k, v in sorted(external_ids.items())]


def flatten(groups):
    out = []
    for group in groups:
        out.extend(group)
    return out
