"""Fixtures for nat_portmap's integration tests (helpers live in natlab.py beside this file)."""

from __future__ import annotations

import pytest

from natlab import Lab


@pytest.fixture(scope='module')
def lab_module():
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture
def lab(lab_module):
    """The module's lab, with the host namespace reset to Docker's footprint before each test."""
    lab_module.reset()
    yield lab_module
