"""Host-wide claims on the ports a node manager has picked but no node listens on yet.

Between ``allocate_port`` and the moment redis-server binds the port, the port
is free to anyone: two rkvstore servers on one host (two data dirs, or a test
run's parallel workers) could both pick it, and one node would then fail to
start. A claim is an exclusive ``flock`` on ``<tmp>/rkvstore-ports/<port>``,
held by the claiming process until its node is up (or the port is given back);
the kernel drops it if that process dies. Claims are best effort: where the
directory cannot be used, allocation goes on without them, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from pathlib import Path


def default_claims_dir() -> Path:
    return Path(tempfile.gettempdir()) / "rkvstore-ports"


class PortClaims:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_claims_dir()
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # port -> fd holding the flock (-1: none possible)

    def claim(self, port: int) -> bool:
        """Claim ``port``; False if another process (or this one) holds it."""
        with self._lock:
            if port in self._held:
                return False
            fd = self._open_locked(port)
            if fd is None:
                return False
            self._held[port] = fd
            return True

    def release(self, port: int) -> None:
        with self._lock:
            fd = self._held.pop(port, None)
        if fd is not None and fd >= 0:
            # Unlinked before the unlock: a process that opened the old file meanwhile
            # sees it is no longer the one at the path (see _open_locked) and tries again.
            with contextlib.suppress(OSError):
                os.unlink(self.directory / str(port))
            os.close(fd)

    def _open_locked(self, port: int) -> int | None:
        path = self.directory / str(port)
        try:
            self._ensure_directory()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return -1  # no claims on this host: the port is as free as port_free says
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise BlockingIOError  # released and unlinked since our open
        except OSError:
            os.close(fd)
            return None
        return fd

    def _ensure_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(exist_ok=True)
            # Every user's servers claim ports in the same directory (sticky, like /tmp).
            with contextlib.suppress(OSError):
                self.directory.chmod(0o1777)
