"""Runs last (by name): nothing the run left behind holds a secret a test used,
and no server of the run answered a request 500.

Every secret a test hands to rkvstore goes through ``remember_secret``; every
data dir a test gives rkvstore is in ``ARTIFACT_DIRS``. Database files, logs,
key files and Redis's own files are all scanned, except the two files whose
job is to hold a key: ``root-credentials.json`` (the operator's copy of the
root key, mode 0600) and ``master.key``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ARTIFACT_DIRS, USED_SECRETS

ALLOWED_HOLDERS = {"root-credentials.json", "master.key"}


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name not in ALLOWED_HOLDERS]


def test_no_secret_in_anything_the_run_left_behind() -> None:
    dirs = [d for d in ARTIFACT_DIRS if d.exists()]
    if not dirs or not USED_SECRETS:
        pytest.skip("run alone: no other test left artifacts to scan")
    files = [f for d in dirs for f in _files(d)]
    assert files, "the data dirs hold no file at all: the scan would prove nothing"
    needles = {s.encode() for s in USED_SECRETS if len(s) >= 6}
    found: list[str] = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a Redis temp file (AOF/RDB rewrite) gone since the listing
            continue
        found += [f"{path}: {n[:3]!r}…" for n in needles if n in data]
    assert not found, "secrets left behind:\n" + "\n".join(found)


def test_no_request_of_the_run_was_answered_500() -> None:
    """Issue 9: whatever the tests did, no access-log line of any server says 500."""
    dirs = [d for d in ARTIFACT_DIRS if d.exists()]
    if not dirs:
        pytest.skip("run alone: no other test left a server's log to read")
    logs = [f for d in dirs for f in _files(d) if f.name in ("rkvstore.log", "server.out")]
    assert logs, "no server log to read: the scan would prove nothing"
    found = []
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if " rkvstore.access " in line and " status=500 " in line:
                found.append(f"{path}: {line}")
    assert not found, "answered 500:\n" + "\n".join(found[:20])
