"""Offline stand-in for the get-pip.py that ansible-test downloads.

ansible-test bootstraps pip into each sanity-test venv with a script it fetches from
ci-files.testing.ansible.com (not reachable here) and caches as
~/.ansible/test/cache/get_pip_<X_Y>.py.  scripts/test.sh copies this file to that path and
puts the matching pip wheel (``pip download --no-deps pip==X.Y``) in the same directory.

Run as ``python get_pip_X_Y.py [pip install options...] pip==X.Y --no-setuptools --no-wheel``
(ansible-test's quiet_pip.py runs it with runpy as __main__); it imports pip from the wheel and
installs the requested packages with it.
"""

from __future__ import annotations

import glob
import os
import sys

DROPPED_ARGS = ('--no-setuptools', '--no-wheel')


def _here():
    return os.path.dirname(os.path.abspath(__file__))


def _wanted_version():
    """Return the pip version from this file's name (get_pip_24_2.py -> 24.2), or None."""
    name = os.path.splitext(os.path.basename(__file__))[0]
    prefix = 'get_pip_'
    if name.startswith(prefix):
        return name[len(prefix):].replace('_', '.')
    return None


def _find_wheel(directory, version):
    pattern = 'pip-%s-*.whl' % version if version else 'pip-*.whl'
    wheels = sorted(glob.glob(os.path.join(directory, pattern)))
    if not wheels:
        sys.stderr.write('get-pip stand-in: no wheel matching %s in %s; run '
                         '"pip download --no-deps pip==%s -d %s"\n' % (pattern, directory, version, directory))
        sys.exit(1)
    return wheels[-1]


def main():
    directory = os.environ.get('NP_GET_PIP_WHEEL_DIR') or _here()
    wheel = _find_wheel(directory, _wanted_version())
    sys.path.insert(0, wheel)

    from pip._internal.cli.main import main as pip_main  # pylint: disable=import-outside-toplevel

    args = [arg for arg in sys.argv[1:] if arg not in DROPPED_ARGS]
    return pip_main(['install', '--upgrade', '--force-reinstall', '--find-links', directory] + args)


if __name__ == '__main__':
    sys.exit(main())
