"""Run the docker_veth module in THIS process, as Ansible would (python -m style, args from a JSON file), and
report its peak memory; optionally under cProfile. Run it inside a lab host:

    python module_child.py ARGS.json OUT.json [--profile STATS.prof] [--module NAME]

NAME: a module of the collection (default docker_veth).

ARGS.json: {"ANSIBLE_MODULE_ARGS": {...}}. OUT.json gets {"result": <module result>, "vmhwm_kb": ...,
"vmrss_kb": ..., "wall": seconds from before the module's imports to its exit, "cpu": user+sys CPU seconds of this process,
"cpu_children": of its children (ovs-vsctl)}. The module's own JSON is
captured, not printed.
"""

import atexit
import cProfile
import io
import json
import resource
import runpy
import sys
import time

MODULE = 'ansible_collections.netplumb.pipework.plugins.modules.docker_veth'


def proc_status(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return None


def main():
    args_path, out_path = sys.argv[1], sys.argv[2]
    opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    profile_path = opts.get('--profile')
    module = MODULE.rsplit('.', 1)[0] + '.' + opts['--module'] if '--module' in opts else MODULE
    started = time.monotonic()
    captured = io.StringIO()
    profiler = cProfile.Profile() if profile_path else None

    def report():
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_path)
        text = captured.getvalue().strip()
        try:
            result = json.loads(text.splitlines()[-1]) if text else None
        except ValueError:
            result = {'unparsed': text[-2000:]}
        with open(out_path, 'w') as f:
            own = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            json.dump({'result': result, 'vmhwm_kb': proc_status('VmHWM'), 'vmrss_kb': proc_status('VmRSS'),
                       'wall': round(time.monotonic() - started, 4),
                       'cpu': round(own.ru_utime + own.ru_stime, 4),
                       'cpu_children': round(kids.ru_utime + kids.ru_stime, 4)}, f)

    atexit.register(report)
    sys.argv = [module, args_path]
    real_stdout = sys.stdout
    sys.stdout = captured
    try:
        if profiler is not None:
            profiler.enable()
        runpy.run_module(module, run_name='__main__', alter_sys=True)
    except SystemExit:
        pass
    finally:
        sys.stdout = real_stdout
    sys.exit(0)


if __name__ == '__main__':
    main()
