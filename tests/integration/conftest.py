"""Fixtures for integration tests; the helpers live in nphelpers.py (importable by test modules)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nphelpers import containers, ovs_bridge  # noqa: E402,F401 pylint: disable=unused-import
