"""Crash points for fault tests: ``RKVSTORE_TEST_CRASH_POINT=<name>`` kills the process there.

The crash-recovery tests kill ``rkvstore serve`` with SIGKILL at a chosen
point of a change, to prove that the next process brings every node back to
the database's state. Unset (always, outside those tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "RKVSTORE_TEST_CRASH_POINT"
POINTS = frozenset({"task-acquired", "fanout-first-node", "nodes-changed", "db-committed"})


def crash_point(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
