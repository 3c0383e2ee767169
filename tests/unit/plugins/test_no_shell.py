"""Static security checks of the collection's code (issue 7, "Bad input and security").

1. No shell strings anywhere under plugins/: every file is parsed with ``ast`` and must have

   - no ``shell=True`` (any call) and no ``use_unsafe_shell=True`` (Ansible's run_command);
   - no ``os.system``, ``os.popen``, ``os.spawn*p``/``os.exec*p`` with a string, ``subprocess.getoutput`` /
     ``getstatusoutput``, ``commands.*``, ``pty.spawn`` with a string;
   - no command runner (``run_command``, ``self._run``, ``run_argv``, ``subprocess.run/Popen/call/...``)
     called with a string as its command: the first argument must be a list (a literal, a list built by
     ``+``/comprehension, or a variable/attribute whose assignments in the same function are lists), never
     a string or ``shlex.split()`` of a command line (parsing ``iptables-save`` lines with shlex is fine).

   The checker is itself tested on code with each bad pattern, so a green run is not a vacuous one.

2. Every module's documented options (DOCUMENTATION with its doc fragments, as ``ansible-doc`` renders it)
   match its argument spec: the same option names at every level, types, choices, defaults, elements,
   aliases, required. ``ansible-test sanity`` (validate-modules) checks this too, but only in the sanity
   stage and only from a checkout placed under ``ansible_collections/``; this runs with the unit tests.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PLUGINS = os.path.join(REPO, 'plugins')
MODULES = ('docker_veth', 'ovs_vlan_port', 'nat_portmap', 'host_bridge_migrate')

SUBPROCESS_RUNNERS = ('run', 'Popen', 'call', 'check_call', 'check_output')
# Names of callables that take an argv (the runner handed around by the modules, Ansible's run_command).
RUNNER_NAMES = ('run_command', '_run_command', '_run', 'run_argv', 'run')
SHELL_FUNCS = {
    'os': ('system', 'popen', 'popen2', 'popen3', 'popen4'),
    'subprocess': ('getoutput', 'getstatusoutput'),
    'commands': ('getoutput', 'getstatusoutput', 'getstatus'),
}


def plugin_files():
    out = []
    for root, dirs, files in os.walk(PLUGINS):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in files:
            if name.endswith('.py'):
                out.append(os.path.join(root, name))
    return sorted(out)


def _dotted(node):
    """'os.system' for os.system, 'self._run' for self._run, None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return '.'.join(reversed(parts))
    return None


def _is_str_expr(node):
    """Is this expression (certainly) a string: a literal, an f-string, '%' formatting, .format(), ' '.join()?"""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (str, bytes))
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Call) and _dotted(node.func) == 'shlex.split':
        return True  # a command line in disguise
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return _is_str_expr(node.left) or (isinstance(node.op, ast.Add) and _is_str_expr(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in ('format', 'join', 'strip', 'replace', 'lower', 'upper') and \
                (_is_str_expr(node.func.value) or node.func.attr in ('format', 'join')):
            return True
    return False


class _Scopes(ast.NodeVisitor):
    """Assignments per function, to see what a variable passed to a runner was bound to."""

    def __init__(self):
        self.stack = [{}]
        self.calls = []  # (call node, assignments of the enclosing function)

    def _function(self, node):
        self.stack.append({})
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _bind(self, target, value):
        name = _dotted(target)
        if name is not None:
            self.stack[-1].setdefault(name, []).append(value)

    def visit_Assign(self, node):
        for target in node.targets:
            self._bind(target, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self._bind(node.target, node.value)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._bind(node.target, ast.BinOp(left=node.target, op=node.op, right=node.value))
        self.generic_visit(node)

    def visit_Call(self, node):
        merged = {}
        for scope in self.stack:
            for key, values in scope.items():
                merged.setdefault(key, []).extend(values)
        self.calls.append((node, merged))
        self.generic_visit(node)


def _stringish(node, assignments, depth=0):
    if _is_str_expr(node):
        return True
    if depth > 5:
        return False
    name = _dotted(node)
    if name is not None and name in assignments:
        return any(_stringish(v, assignments, depth + 1) for v in assignments[name] if v is not node)
    if isinstance(node, ast.IfExp):
        return _stringish(node.body, assignments, depth + 1) or _stringish(node.orelse, assignments, depth + 1)
    return False


def find_shell_problems(source, filename='<string>'):
    """Every shell-string use in ``source``, as 'file:line: what' strings."""
    tree = ast.parse(source, filename)
    scopes = _Scopes()
    scopes.visit(tree)
    problems = []

    def report(node, what):
        problems.append('%s:%d: %s' % (os.path.relpath(filename, REPO) if os.path.isabs(filename) else filename,
                                       node.lineno, what))

    for call, assignments in scopes.calls:
        func = _dotted(call.func) or ''
        short = func.rsplit('.', 1)[-1]
        for kw in call.keywords:
            if kw.arg in ('shell', 'use_unsafe_shell') and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
                report(call, '%s(..., %s=%s)' % (func or 'call', kw.arg, ast.unparse(kw.value)))
        for mod, names in SHELL_FUNCS.items():
            if func in ['%s.%s' % (mod, n) for n in names]:
                report(call, '%s() runs a shell' % func)
        if func.startswith('os.') and (short.startswith('exec') or short.startswith('spawn')) and call.args:
            # os.execvp(file, args) is fine; a single command string is not.
            if len(call.args) == 1 and _stringish(call.args[0], assignments):
                report(call, '%s() with a command string' % func)
        if func == 'pty.spawn' and call.args and _stringish(call.args[0], assignments):
            report(call, 'pty.spawn() with a command string')
        is_subprocess = func in ['subprocess.%s' % n for n in SUBPROCESS_RUNNERS]
        is_runner = short in RUNNER_NAMES
        if (is_subprocess or is_runner) and call.args:
            if _stringish(call.args[0], assignments):
                report(call, '%s() called with a string command %s' % (func, ast.unparse(call.args[0])[:60]))
        if (is_subprocess or is_runner) and not call.args:
            for kw in call.keywords:
                if kw.arg in ('args', 'argv', 'cmd') and _stringish(kw.value, assignments):
                    report(call, '%s(%s=...) with a string command' % (func, kw.arg))
    return problems


BAD_SNIPPET = textwrap.dedent('''
    import os, subprocess, shlex, pty
    def f(module, name, run):
        os.system('ip link del ' + name)
        os.popen('ls')
        subprocess.run('ip link', shell=True)
        subprocess.check_output(['ip', 'link'], shell=True)
        subprocess.call('ip link show %s' % name)
        subprocess.Popen(f'ovs-vsctl del-br {name}')
        subprocess.getoutput('id')
        module.run_command('ovs-vsctl add-br %s' % name)
        module.run_command(['ip'], use_unsafe_shell=True)
        cmd = 'ip link set %s up' % name
        module.run_command(cmd)
        argv = ' '.join(['ip', 'link'])
        run(argv)
        self._run('iptables-save')
        os.execvp('sh -c id')
        subprocess.run(shlex.split('ip link'))
        pty.spawn('/bin/sh -c id')
    ''')

GOOD_SNIPPET = textwrap.dedent('''
    import subprocess
    def f(module, name, run, extra):
        argv = ['ip', 'link', 'del', name]
        module.run_command(argv)
        module.run_command(['ovs-vsctl', '--', 'add-br', name] + extra)
        subprocess.run(['ip', '-j', 'link'], check=False, shell=False)
        argv += ['--', 'x']
        run(argv)
        run([c for c in argv])
        '%s' % name
    ''')


def test_checker_flags_every_bad_pattern():
    problems = find_shell_problems(BAD_SNIPPET, 'bad.py')
    lines = sorted(set(int(p.split(':')[1]) for p in problems))
    bad_lines = [i + 1 for i, line in enumerate(BAD_SNIPPET.splitlines())
                 if line.strip() and not line.strip().startswith(('import', 'def', 'cmd =', 'argv ='))]
    assert lines == bad_lines, '\n'.join(problems)


def test_checker_accepts_argument_lists():
    assert find_shell_problems(GOOD_SNIPPET, 'good.py') == []


def test_plugins_exist():
    files = plugin_files()
    assert len(files) >= 20, files
    assert all(os.path.exists(os.path.join(PLUGINS, 'modules', m + '.py')) for m in MODULES)


@pytest.mark.parametrize('path', plugin_files(), ids=lambda p: os.path.relpath(p, PLUGINS))
def test_no_shell_strings(path):
    with open(path, encoding='utf-8') as f:
        source = f.read()
    assert find_shell_problems(source, path) == []


# ---- documented options == argument spec -----------------------------------------------------------

class _Captured(Exception):
    pass


def argument_spec_of(module_name):
    """The argument_spec a module hands to AnsibleModule (as validate-modules captures it)."""
    mod = importlib.import_module('ansible_collections.netplumb.pipework.plugins.modules.%s' % module_name)
    captured = {}

    class FakeModule:
        def __init__(self, argument_spec=None, **kwargs):
            captured['spec'] = argument_spec
            captured['kwargs'] = kwargs
            raise _Captured()

    original = mod.AnsibleModule
    mod.AnsibleModule = FakeModule
    try:
        with pytest.raises(_Captured):
            mod.main()
    finally:
        mod.AnsibleModule = original
    return captured['spec']


@pytest.fixture(scope='module')
def rendered_docs():
    """ansible-doc's JSON of the four modules, doc fragments merged, in one call."""
    ansible_doc = shutil.which('ansible-doc') or os.path.join(os.path.dirname(sys.executable), 'ansible-doc')
    if not os.path.exists(ansible_doc):
        pytest.skip('ansible-doc is not installed')
    env = dict(os.environ)
    env.setdefault('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO, '.build', 'collections'))
    proc = subprocess.run([ansible_doc, '--json', '-t', 'module'] + ['netplumb.pipework.%s' % m for m in MODULES],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    return dict((name.split('.')[-1], value['doc']) for name, value in docs.items())


_TYPE_DEFAULT = 'str'


def _norm(value):
    if isinstance(value, (list, tuple)):
        return sorted(str(v) for v in value)
    return value


def compare_options(spec, doc_options, where):
    """Differences between an argument spec and documented options, recursively."""
    diffs = []
    spec = spec or {}
    doc_options = doc_options or {}
    for name in sorted(set(spec) - set(doc_options)):
        diffs.append('%s%s: in the argument spec, not documented' % (where, name))
    for name in sorted(set(doc_options) - set(spec)):
        diffs.append('%s%s: documented, not in the argument spec' % (where, name))
    for name in sorted(set(spec) & set(doc_options)):
        s, d = spec[name], doc_options[name]
        label = '%s%s' % (where, name)
        pairs = [
            ('type', s.get('type', _TYPE_DEFAULT), d.get('type', _TYPE_DEFAULT)),
            ('elements', s.get('elements'), d.get('elements')),
            ('choices', _norm(s.get('choices')), _norm(d.get('choices'))),
            ('default', s.get('default'), d.get('default')),
            ('required', bool(s.get('required')), bool(d.get('required'))),
            ('aliases', _norm(s.get('aliases') or []), _norm(d.get('aliases') or [])),
        ]
        for key, have, documented in pairs:
            if have != documented:
                diffs.append('%s: %s is %r in the argument spec but documented as %r' % (label, key, have, documented))
        if s.get('options') or d.get('suboptions'):
            diffs += compare_options(s.get('options'), d.get('suboptions'), label + '.')
    return diffs


def test_compare_options_finds_differences():
    spec = {'a': {'type': 'int'}, 'b': {'type': 'list', 'elements': 'dict', 'options': {'x': {}}}, 'c': {}}
    doc = {'a': {'type': 'str'}, 'b': {'type': 'list', 'elements': 'dict', 'suboptions': {'y': {}}}, 'd': {}}
    diffs = compare_options(spec, doc, '')
    assert any(x.startswith('a: type') for x in diffs)
    assert 'b.x: in the argument spec, not documented' in diffs
    assert 'b.y: documented, not in the argument spec' in diffs
    assert 'c: in the argument spec, not documented' in diffs
    assert 'd: documented, not in the argument spec' in diffs


@pytest.mark.parametrize('module_name', MODULES)
def test_documented_options_match_argument_spec(module_name, rendered_docs):
    spec = argument_spec_of(module_name)
    doc = rendered_docs[module_name]
    assert compare_options(spec, doc.get('options'), '') == []
