"""Counts a server's database work from inside it, for the benchmarks (bench/_common.py).

Python imports ``sitecustomize`` at start from the first folder on its path
that has one; the benchmarks put this folder first on ``PYTHONPATH`` of the
``rkvstore serve`` they start, and only there, so every Python process of that
server (request workers too, however they are started) counts, and nothing
else does. With ``RKVSTORE_BENCH_PROBE_DIR`` unset it does nothing at all.

Counted through SQLAlchemy's own events, on every engine and pool the process
makes: statements sent (``before_cursor_execute``), transactions begun,
committed and rolled back (``begin``/``commit``/``rollback``), pool checkouts
and new DBAPI connections. Each process keeps its running totals in a small
file of its own, ``<dir>/<pid>.counts`` (six unsigned 64-bit integers, mapped
into memory), which the benchmark reads and sums without asking the process
anything: no thread and no socket is added to the server, so a parent that
forks its workers forks what it would have forked anyway. A child forked
without exec starts a file of its own from zero; a process that exits leaves
its final totals, so sums only grow. Each event costs about a microsecond,
which is inside the server CPU the benchmarks print.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from typing import Any

NAMES = ("statements", "begins", "commits", "rollbacks", "checkouts", "connects")
_FORMAT = "<" + "Q" * len(NAMES)
_SIZE = struct.calcsize(_FORMAT)
_DIR = os.environ.get("RKVSTORE_BENCH_PROBE_DIR")


class _Totals:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.map = self._open()

    def _open(self) -> mmap.mmap:
        path = os.path.join(self.directory, f"{os.getpid()}.counts")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _SIZE)
            return mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    def counter(self, index: int) -> Any:
        offset = 8 * index

        def bump(*_args: Any, **_kwargs: Any) -> None:
            with self.lock:
                (value,) = struct.unpack_from("<Q", self.map, offset)
                struct.pack_into("<Q", self.map, offset, value + 1)

        return bump

    def after_fork(self) -> None:
        """The child's own file, from zero; a fresh lock (a thread may have held it)."""
        self.lock = threading.Lock()
        self.map = self._open()


def _install(directory: str) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    totals = _Totals(directory)
    for index, (target, name) in enumerate(
        [
            (Engine, "before_cursor_execute"),
            (Engine, "begin"),
            (Engine, "commit"),
            (Engine, "rollback"),
            (Pool, "checkout"),
            (Pool, "connect"),
        ]
    ):
        event.listen(target, name, totals.counter(index))
    os.register_at_fork(after_in_child=totals.after_fork)


if _DIR:
    _install(_DIR)
