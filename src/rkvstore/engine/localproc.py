"""Process chores of the local provider: ports, pids, signals, Linux's /proc."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

logger = logging.getLogger("rkvstore.engine.local")

POLL: Final = 0.05
KILL_WAIT: Final = 5.0
TERM_REPEAT: Final = 1.0


class LocalNodeError(Exception):
    """A local node could not be started, reached or stopped. Messages hold no secret."""


def default_port_range() -> tuple[int, int]:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (10000, low - 1) if low > 11000 else (low, 65535)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited, whatever kill(0) says
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])


def is_node_process(pid: int, port: int, conf: Path) -> bool:
    """Whether ``pid`` is the redis-server of this node (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc here: trust the pid
    # Redis rewrites its title to "<argv0> <bind>:<port>"; before that it is "<argv0> <conf>".
    return b"redis-server" in cmdline and (
        f":{port}".encode() in cmdline or str(conf).encode() in cmdline
    )


def send(pid: int, *signals: signal.Signals) -> None:
    for sig in signals:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def terminate_pid(pid: int, alive: Callable[[], bool], label: str, timeout: float) -> None:
    """SIGTERM (and SIGCONT, so a stopped process gets it), then SIGKILL after ``timeout``."""
    if not alive():
        return
    # Redis refuses a SIGTERM that comes while it writes its first AOF (right
    # after a replica's full sync) and forgets it: ask again every second.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        send(pid, signal.SIGTERM, signal.SIGCONT)
        if wait_gone(alive, min(TERM_REPEAT, max(0.0, deadline - time.monotonic()))):
            return
    logger.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", label, pid, timeout)
    send(pid, signal.SIGKILL)
    if not wait_gone(alive, KILL_WAIT):
        raise LocalNodeError(f"process {pid} of {label} survives SIGKILL")


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:]) or "(empty log)"
