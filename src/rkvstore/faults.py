"""Fault points for fault tests; unset (always, outside those tests) they do nothing.

``RKVSTORE_TEST_CRASH_POINT=<name>`` kills the process there with SIGKILL, to
prove that the next process brings every node back to the database's state.
``RKVSTORE_TEST_STALL_POINT=<name>`` stops it there with SIGSTOP (the whole
process, lease renewal included) until the test sends SIGCONT, to prove that
a task which outlived its lease records nothing after a takeover.
"""

from __future__ import annotations

import os
import signal
import threading

VARIABLE = "RKVSTORE_TEST_CRASH_POINT"
STALL_VARIABLE = "RKVSTORE_TEST_STALL_POINT"
POINTS = frozenset(
    {
        "task-acquired",
        "fanout-first-node",
        "nodes-changed",
        "db-committed",
        "kms-pending-written",
        "kms-nodes-changed",
    }
)


def crash_point(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STALL_VARIABLE) == name:
        # Sent to this thread, not to the process: a SIGSTOP sent to the process
        # is taken by whichever thread the kernel picks (often the event loop's),
        # and until that thread runs this one carries on past the point, under
        # load into the next transaction; stopped there, its open transaction held
        # the task row a peer's takeover waits for, which ran out the statement
        # timeout (503). Pending on this thread, it stops the whole process
        # before this thread runs another line.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
