"""``serve --workers N``: a parent process and N request workers forked on one listening socket.

The parent binds the port, prepares the database once (migrations, the first
tenant: in a short-lived child, so that the parent forks its workers with no
thread, connection or engine of its own), forks the workers and then only
watches them: a worker that dies is replaced (at once, or after a growing
pause if it dies young, so that a worker that cannot start does not spin).
SIGINT or SIGTERM to the parent stops the service: it marks the stop as the
whole service's (``ServiceStopping``, so that the supervising worker stops
the nodes), sends SIGTERM to every worker and waits for them, bounded.

Workers run in their own process group: a Ctrl-C at the terminal reaches the
parent only, which stops them in order (uvicorn takes a second signal as an
order to stop at once). A worker whose parent dies stops by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rkvstore.config import Settings
from rkvstore.supervision import ServiceStopping

log = logging.getLogger("rkvstore.workers")
# A worker that dies younger than this is replaced after a pause, doubled each time.
YOUNG_SECONDS = 10.0
MAX_PAUSE_SECONDS = 30.0
# How long the parent waits for its workers to stop (a graceful HTTP shutdown,
# builds in flight, nodes stopped) before it kills them.
STOP_SECONDS = 90.0
POLL_SECONDS = 0.2


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """The one listening socket every worker accepts on."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    pid: int
    started: float


class Parent:
    def __init__(
        self,
        settings: Settings,
        listener: socket.socket,
        child_main: Callable[[socket.socket, ServiceStopping], None],
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.child_main = child_main
        self.stopping = ServiceStopping()
        self.workers: dict[int, _Worker] = {}
        self._stop_requested = False
        self._pause = 1.0
        self._respawn_at = 0.0  # a replacement is due no earlier than this
        self._missing = 0

    def run(self) -> int:
        """Until SIGINT/SIGTERM; the exit status (0: stopped on request)."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for _ in range(self.settings.workers):
            self._spawn()
        from rkvstore.serving import listening_url

        log.info(
            "serving on %s with %d workers (pids %s)",
            listening_url(self.settings),
            self.settings.workers,
            " ".join(str(pid) for pid in self.workers),
        )
        while not self._stop_requested:
            self._reap()
            if self._missing and time.monotonic() >= self._respawn_at:
                self._missing -= 1
                self._spawn()
            time.sleep(POLL_SECONDS)
        self._stop_all()
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_requested = True

    def _spawn(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.setpgid(0, 0)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _stop_when_orphaned(parent)
                self.child_main(self.listener, self.stopping)
                code = 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                os._exit(code)
        self.workers[pid] = _Worker(pid, time.monotonic())

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue  # the short-lived preparation child, or a stray
            age = time.monotonic() - worker.started
            log.warning(
                "worker %d %s after %.0f s; starting another",
                pid,
                _describe(status),
                age,
            )
            if age < YOUNG_SECONDS:
                self._respawn_at = time.monotonic() + self._pause
                self._pause = min(MAX_PAUSE_SECONDS, self._pause * 2)
            else:
                self._pause = 1.0
            self._missing += 1

    def _stop_all(self) -> None:
        self.stopping.set()
        log.info("stopping %d workers", len(self.workers))
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while self.workers and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(POLL_SECONDS / 4)
                continue
            if self.workers.pop(pid, None) is not None and status != 0:
                log.warning("worker %d %s while stopping", pid, _describe(status))
        for pid in self.workers:
            log.warning("worker %d did not stop within %.0f s; killing it", pid, STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.workers.clear()
        self.listener.close()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _stop_when_orphaned(parent: int) -> None:
    """A worker whose parent is gone (killed) stops like on SIGTERM, within a second."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("worker %d: the parent process %d is gone; stopping", os.getpid(), parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def prepare_once(prepare: Callable[[], None]) -> None:
    """``prepare`` in a child process of its own, waited for: the parent stays free of
    threads and connections before it forks its workers. Its failure stops the start."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            prepare()
            code = 0
        except BaseException:
            log.exception("preparing the data dir and the database failed")
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
                logging.shutdown()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemExit(f"rkvstore: could not start ({_describe(status)} while preparing)")
