"""The measured methods of the single-host benchmark: one class per way of wiring N containers on a lab host.

Each is called as method(host, items) on a host that bench/sections.py has just reset (e: on the host that
(a) has just wired) and returns one run's dict, appended under results.json['single'][N][key] (b: under
['loop'][N]; f: under ['fixed']). bench/report.py reads these keys:
    a  OneTask    ONE docker_veth task with the attachments list (playbooks/batch.yml), over SSH
    e  NoOp       (a) again on the wired host: the idempotent re-run
    b  Loop       the same as an Ansible loop of single attachments (playbooks/loop.yml)
    c  OvsDocker  a shell script of Debian's ovs-docker add-port + set-vlan, inside the host (no SSH)
    d  Floor      bench/floor.py inside the host: the least work that gives the same wiring
    f  PingTask   one ansible.builtin.ping task: the fixed cost of any one-task play
A run costs what the method costs (seconds for a, d, e, f at N=200; minutes for b and c).
"""

from session import BENCH, BRIDGE, last_json


class Method:
    """A way of wiring the items on a host; `key` is its letter in results.json."""

    key = None

    def __init__(self, session):
        self.session = session

    def __call__(self, host, items):
        raise NotImplementedError

    @staticmethod
    def attachments(items):
        """The docker_veth attachment of each item (the module's options; the floor's extras left out)."""
        return [{'container': it['container'], 'address': it['address'], 'vlan': it['vlan']} for it in items]

    def play(self, name, host, items=None):
        """Run bench/playbooks/<name>.yml on host; (wall, host's callback record, callback data)."""
        extra = {} if items is None else {'bench_bridge': BRIDGE, 'bench_attachments': {host: self.attachments(items)}}
        wall, cb = self.session.playbook(BENCH / 'playbooks' / ('%s.yml' % name), host, extra)
        return wall, [x for x in cb['results'] if x['host'] == host][0], cb

    @staticmethod
    def task_seconds(record, cb):
        """From the task's start to its host's result (the play's start-up left out)."""
        return record['end'] - cb['tasks'][0]['start'] if cb['tasks'] else None


class OneTask(Method):
    key = 'a'

    def __call__(self, host, items):
        wall, r, cb = self.play('batch', host, items)
        return {'wall': wall, 'internal': r.get('elapsed'), 'changed': r['changed'], 'task': self.task_seconds(r, cb),
                'playbook_total': cb.get('total')}


class NoOp(OneTask):
    """(a) on the host it has just wired: nothing to change, so what is left is reading and comparing."""

    key = 'e'


class Loop(Method):
    key = 'b'

    def __call__(self, host, items):
        wall, r, dummy = self.play('loop', host, items)
        internal = [e for e in r.get('item_elapsed', []) if e is not None]
        return {'wall': wall, 'internal': sum(internal) if internal else None, 'items': r.get('items'),
                'changed_items': r.get('item_changed')}


class OvsDocker(Method):
    key = 'c'

    def __call__(self, host, items):
        script = self.session.out / ('ovs-docker-%d.sh' % len(items))
        with open(script, 'w') as f:
            f.write('set -e\n')
            for it in items:
                f.write('/usr/bin/ovs-docker add-port %s eth1 %s --ipaddress=%s\n' % (BRIDGE, it['container'], it['address']))
                f.write('/usr/bin/ovs-docker set-vlan %s eth1 %s %d\n' % (BRIDGE, it['container'], it['vlan']))
        wall = self.session.hexec(host, ['bash', script])[0]
        return {'wall': wall}


class Floor(Method):
    key = 'd'

    def __call__(self, host, items):
        spec = self.session.spec_file(items, 'floor-%d' % len(items))
        wall, proc = self.session.hexec(host, [self.session.python, BENCH / 'floor.py', spec])
        phases = last_json(proc.stdout)
        return {'wall': wall, 'internal': phases['total'], 'phases': phases}


class PingTask(Method):
    key = 'f'

    def __call__(self, host, items=None):
        wall, r, cb = self.play('ping', host)
        return {'wall': wall, 'task': self.task_seconds(r, cb)}
