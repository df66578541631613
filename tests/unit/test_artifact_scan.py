"""The end-of-run scans (tests/artifacts.py, run by conftest.py's pytest_sessionfinish)
find what they look for: a planted secret, a planted 500."""

from __future__ import annotations

from pathlib import Path

from tests.artifacts import record, scan_session

SECRET = "Sk-planted-secret-of-the-scan-test"
ACCESS_500 = "2026-01-01 00:00:00 INFO rkvstore.access POST / status=500 ms=3"
ACCESS_200 = "2026-01-01 00:00:00 INFO rkvstore.access POST / status=200 ms=3"


def _run(tmp_path: Path, log: str, store: bytes) -> tuple[Path, list[str]]:
    session, data = tmp_path / "session", tmp_path / "data"
    session.mkdir()
    data.mkdir()
    (data / "server.out").write_text(log + "\n")
    (data / "rkvstore.db").write_bytes(store)
    (data / "root-credentials.json").write_text(f'{{"AccessKeySecret": "{SECRET}"}}')
    record("dirs", [str(data)], session)
    record("secrets", [SECRET, "short"], session)
    return data, scan_session(session, whole_suite=True)


def test_a_clean_run_passes(tmp_path: Path) -> None:
    _, problems = _run(tmp_path, ACCESS_200, b"hash-only")
    assert problems == []


def test_a_secret_in_a_data_file_fails_the_run(tmp_path: Path) -> None:
    data, problems = _run(tmp_path, ACCESS_200, b"..." + SECRET.encode() + b"...")
    assert problems == ["secrets left behind:", f"{data / 'rkvstore.db'}: b'Sk-'…"]


def test_an_answer_500_fails_the_run(tmp_path: Path) -> None:
    data, problems = _run(tmp_path, ACCESS_500, b"hash-only")
    assert problems == ["answered 500:", f"{data / 'server.out'}: {ACCESS_500}"]


def test_a_whole_run_with_nothing_to_scan_fails(tmp_path: Path) -> None:
    session = tmp_path / "session"
    session.mkdir()
    assert scan_session(session, whole_suite=False) == []
    assert scan_session(session, whole_suite=True) == [
        "the run left no file or used no secret: the secret scan proves nothing",
        "no server log to read: the scan for status 500 proves nothing",
    ]
