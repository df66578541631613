"""What a test run leaves behind, and the end-of-run scans of it.

Every secret a test hands to rkvstore goes through ``remember_secret``; every
data dir a test gives rkvstore goes into ``ARTIFACT_DIRS``. Both are also
written to files in the session directory (``$RKVSTORE_TEST_SESSION_DIR``, made
by the pytest process that runs the session and inherited by its xdist
workers), so that the process that runs the session, once every worker is done,
scans what all of them left behind (conftest.py ``pytest_sessionfinish``):

- no file holds a secret a test used, except the two files whose job is to
  hold a key: ``root-credentials.json`` (the operator's copy of the root key,
  mode 0600) and ``master.key``;
- no access-log line of any server says a request was answered 500 (issue 9).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

SESSION_ENV = "RKVSTORE_TEST_SESSION_DIR"
ALLOWED_HOLDERS = {"root-credentials.json", "master.key"}
SERVER_LOGS = {"rkvstore.log", "server.out"}


def session_dir() -> Path:
    """The run's shared directory; made here when no pytest session made one."""
    given = os.environ.get(SESSION_ENV)
    if given:
        return Path(given)
    made = tempfile.mkdtemp(prefix="rkvstore-test-session-")
    os.environ[SESSION_ENV] = made
    return Path(made)


def record(kind: str, lines: Iterable[str], directory: Path | None = None) -> None:
    """Add ``lines`` to what this process recorded of ``kind`` ("dirs", "secrets")."""
    # One file per process and kind: no two writers share a file.
    path = (directory or session_dir()) / f"{kind}-{os.getpid()}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.writelines(json.dumps(line) + "\n" for line in lines)


def read_recorded(directory: Path, kind: str) -> list[str]:
    return [
        json.loads(line)
        for path in sorted(directory.glob(f"{kind}-*.jsonl"))
        for line in path.read_text().splitlines()
        if line
    ]


class _RecordedDirs(list[Path]):
    """A list of this process's artifact dirs that also tells the session directory."""

    def append(self, path: Path) -> None:
        super().append(path)
        record("dirs", [str(path)])

    def extend(self, paths: Iterable[Path]) -> None:
        paths = list(paths)
        super().extend(paths)
        record("dirs", [str(p) for p in paths])


USED_SECRETS: set[str] = set()
ARTIFACT_DIRS: list[Path] = _RecordedDirs()


def remember_secret(value: str) -> str:
    if value not in USED_SECRETS:
        USED_SECRETS.add(value)
        record("secrets", [value])
    return value


def scanned_files(roots: Iterable[Path]) -> list[Path]:
    """The files under ``roots`` that must hold no secret."""
    return [
        p
        for root in roots
        if root.exists()
        for p in root.rglob("*")
        if p.is_file() and p.name not in ALLOWED_HOLDERS
    ]


def secrets_left_behind(files: Iterable[Path], used: Iterable[str]) -> list[str]:
    """``path: first three bytes…`` of every secret found in one of ``files``."""
    needles = {s.encode() for s in used if len(s) >= 6}
    found: list[str] = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a Redis temp file (AOF/RDB rewrite) gone since the listing
            continue
        found += [f"{path}: {n[:3]!r}…" for n in needles if n in data]
    return found


def answered_500(files: Iterable[Path]) -> list[str]:
    """Every access-log line of the server logs among ``files`` that says status 500."""
    found: list[str] = []
    for path in (f for f in files if f.name in SERVER_LOGS):
        for line in path.read_text(errors="replace").splitlines():
            if " rkvstore.access " in line and " status=500 " in line:
                found.append(f"{path}: {line}")
    return found


def scan_session(directory: Path, *, whole_suite: bool) -> list[str]:
    """The failures of the end-of-run scans, as report lines (none: all is well).

    ``whole_suite``: the run was the whole suite, so a scan with nothing to read
    would prove nothing and fails too; a run of a few tests may leave nothing.
    """
    roots = sorted({Path(d) for d in read_recorded(directory, "dirs")})
    used = read_recorded(directory, "secrets")
    files = scanned_files(roots)
    problems: list[str] = []
    if whole_suite and not (files and used):
        problems.append("the run left no file or used no secret: the secret scan proves nothing")
    if whole_suite and not any(f.name in SERVER_LOGS for f in files):
        problems.append("no server log to read: the scan for status 500 proves nothing")
    left = secrets_left_behind(files, used)
    if left:
        problems += ["secrets left behind:", *left]
    errors = answered_500(files)
    if errors:
        problems += ["answered 500:", *errors[:20]]
    return problems
