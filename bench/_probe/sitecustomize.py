"""Counts a server's database work from inside it, for the benchmarks (bench/_common.py).

Python imports ``sitecustomize`` at start from the first folder on its path
that has one; the benchmarks put this folder first on ``PYTHONPATH`` of the
``rkvstore serve`` they start, and only there, so every Python process of that
server (request workers too, however they are started) counts, and nothing
else does. With ``RKVSTORE_BENCH_PROBE_DIR`` unset it does nothing at all.

Counted through SQLAlchemy's own events, on every engine and pool the process
makes: statements sent (``before_cursor_execute``), transactions begun,
committed and rolled back (``begin``/``commit``/``rollback``), pool checkouts
and new DBAPI connections. A process answers its running totals as one JSON
line to whoever connects to ``<dir>/<pid>.sock``; the benchmark sums the
processes and takes differences around what it measures. Each event costs
about a microsecond, which is inside the server CPU the benchmarks print.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from typing import Any

_DIR = os.environ.get("RKVSTORE_BENCH_PROBE_DIR")


def _install(directory: str) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    counts = {
        "statements": 0,
        "begins": 0,
        "commits": 0,
        "rollbacks": 0,
        "checkouts": 0,
        "connects": 0,
    }
    lock = threading.Lock()

    def counter(name: str) -> Any:
        def bump(*_args: Any, **_kwargs: Any) -> None:
            with lock:
                counts[name] += 1

        return bump

    event.listen(Engine, "before_cursor_execute", counter("statements"))
    event.listen(Engine, "begin", counter("begins"))
    event.listen(Engine, "commit", counter("commits"))
    event.listen(Engine, "rollback", counter("rollbacks"))
    event.listen(Pool, "checkout", counter("checkouts"))
    event.listen(Pool, "connect", counter("connects"))

    path = os.path.join(directory, f"{os.getpid()}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with lock:
                line = json.dumps({"pid": os.getpid(), **counts}) + "\n"
            with contextlib.suppress(OSError), conn:
                conn.sendall(line.encode())

    threading.Thread(target=serve, name="bench-probe", daemon=True).start()


if _DIR:
    _install(_DIR)
