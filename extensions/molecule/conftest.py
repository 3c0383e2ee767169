# Copyright: netplumb.pipework developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pytest fixtures of the Molecule scenarios' testinfra tests; the checks are in pipework_checks.py
(importable from the tests because pytest puts this directory on sys.path for this conftest)."""

from __future__ import annotations

import pytest

from pipework_checks import Lab


@pytest.fixture(scope='session')
def lab(request):
    """The scenario's hosts over testinfra's ssh backend, with the ssh config given by --ssh-config."""
    return Lab(request.config.option.ssh_config)
