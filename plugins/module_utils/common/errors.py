# -*- coding: utf-8 -*-
# Copyright: netplumb.pipework contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type the collection raises; modules turn it into fail_json at their edge."""

from __future__ import annotations


class PipeworkError(Exception):
    """An error an operator can act on.

    ``msg`` is the operator-facing text (it names the option and value at fault);
    ``details`` are extra keys for the failure result (for instance OVS's own stderr).
    """

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details
