"""What the benchmarks share: the machine, servers, clients, blocks, ratios, counts.

Every figure a benchmark prints is a ratio of two sides measured in one run,
in interleaved blocks whose order alternates, repeated: the median and the
spread (min-max) over the repetitions, because on 2 shared cores an absolute
time swings by 2x with whatever else runs.

The server is ``rkvstore serve`` in a subprocess, driven only through its
public surface: signed calls (``rkvstore.client.RpcClient``), ``RKVSTORE_*``
settings, its database (for seeding and for reading what an operator could
read with the master key). Two things are measured from outside it:

- CPU: ``utime + stime`` from ``/proc/<pid>/stat`` of the server and of its
  Python descendants (request workers, if any); not of the redis-server
  processes it supervises, which are the nodes' cost, not rkvstore's.
- SQL: ``bench/_probe/sitecustomize.py`` is put first on the server's
  ``PYTHONPATH``: it counts SQLAlchemy's statement, transaction and pool
  events inside every Python process of the server into a small file per
  process (``Server.sql()`` sums them). On PostgreSQL,
  ``pg_transactions`` also reads the database's own count of transactions
  (``pg_stat_database``), which no code in the server can miss.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from rkvstore.client import RpcClient
from rkvstore.secret import Secret

PG_ADMIN_URL = os.environ.get("RKVSTORE_BENCH_PG_URL") or os.environ.get(
    "RKVSTORE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PROBE_DIR = Path(__file__).resolve().parent / "_probe"
TICKS = os.sysconf("SC_CLK_TCK")
# PostgreSQL (15+) flushes a backend's counts to pg_stat_database when it goes
# idle, but at most once a second; one that flushed less than a second before
# tries again 10 s later (PGSTAT_IDLE_INTERVAL). Wait that out before reading.
PG_STATS_FLUSH_SECONDS = 11.0

T = TypeVar("T")
W = TypeVar("W")


# --------------------------------------------------------------------------- the machine


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def print_start(title: str) -> float:
    print(title)
    print(f"machine: {machine()}")
    print(f"load average at start (1/5/15 min): {load_average()}")
    sys.stdout.flush()
    return time.monotonic()


def print_end(started: float) -> None:
    print(f"load average at end (1/5/15 min): {load_average()}")
    print(f"took {time.monotonic() - started:.0f} s")


def common_arguments(parser: argparse.ArgumentParser, databases: str) -> None:
    parser.add_argument(
        "--databases",
        default=databases,
        help=f"comma list of sqlite, postgresql [{databases}]",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for every rkvstore serve started (repeatable), "
        "e.g. RKVSTORE_WORKERS=2",
    )


def database_kinds(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("sqlite", "postgresql"):
            raise SystemExit(f"--databases: unknown database {kind!r}")
    return kinds


def server_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.startswith("RKVSTORE_"):
            raise SystemExit(f"--server-env: expected RKVSTORE_NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``median (min-max)``."""
    if not values:
        return "n/a"
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def rotations(sides: Sequence[T], repetition: int) -> list[T]:
    """The sides in the order of this repetition: each one goes first in turn."""
    k = repetition % len(sides)
    return [*sides[k:], *sides[:k]]


# --------------------------------------------------------------------------- CPU


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command, parent, CPU seconds) of one process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return comm, int(rest[1]), (int(rest[11]) + int(rest[12])) / TICKS


def process_cpu(pid: int, *, exclude: tuple[str, ...] = ("redis-server",)) -> float:
    """CPU seconds of ``pid`` and its descendants, less those named in ``exclude``."""
    table: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (_comm, ppid, _cpu) in table.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    return sum(
        cpu
        for p, (comm, _ppid, cpu) in table.items()
        if p in family and not comm.startswith(exclude)
    )


# --------------------------------------------------------------------------- SQL counts


@dataclass(frozen=True)
class Sql:
    """SQLAlchemy events inside the server (see bench/_probe/sitecustomize.py)."""

    statements: int = 0
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0
    checkouts: int = 0
    connects: int = 0

    def __sub__(self, other: Sql) -> Sql:
        return Sql(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def __add__(self, other: Sql) -> Sql:
        return Sql(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def per(self, n: int) -> str:
        n = max(1, n)
        return (
            f"{self.statements / n:.1f} statements, {self.begins / n:.1f} transactions "
            f"({self.commits / n:.1f} commits, {self.rollbacks / n:.1f} rollbacks), "
            f"{self.checkouts / n:.1f} pool checkouts"
        )


def read_probes(directory: Path) -> Sql:
    """The totals of every process the probe counted in (see bench/_probe)."""
    totals = [0] * len(fields(Sql))
    for path in sorted(directory.glob("*.counts")):
        with contextlib.suppress(OSError, struct.error):
            values = struct.unpack("<" + "Q" * len(totals), path.read_bytes())
            totals = [a + b for a, b in zip(totals, values, strict=True)]
    return Sql(*totals)


# --------------------------------------------------------------------------- databases


@contextlib.contextmanager
def pg_database(prefix: str = "rkv_bench") -> Iterator[str]:
    """A new PostgreSQL database on the admin URL's server, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def pg_reachable() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def pg_transactions(url: str, *, wait: bool = True) -> int:
    """Transactions committed and rolled back in ``url``'s database, as PostgreSQL counts them."""
    if wait:
        time.sleep(PG_STATS_FLUSH_SECONDS)
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            value = conn.execute(
                text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :n"),
                {"n": name},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(value)


@contextlib.contextmanager
def database_url(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in ``workdir``, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'rkvstore.db'}"
        return
    with pg_database() as url:
        yield url


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, ``grace`` seconds to exit, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def _raise_nofile(limit: int) -> None:  # runs in the child, before exec
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Server:
    """One ``rkvstore serve`` in a subprocess, throttling off, SQL counted."""

    name: str
    process: subprocess.Popen[bytes]
    endpoint: str
    key_id: str
    key_secret: str
    master_key: str
    database_url: str
    data_dir: Path
    probe_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, timeout: float = 120.0) -> RpcClient:
        """A signed client with its own keep-alive connection."""
        return RpcClient(self.endpoint, self.key_id, Secret(self.key_secret), timeout=timeout)

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def sql(self) -> Sql:
        return read_probes(self.probe_dir)

    def open_token(self, token: str) -> str:
        """A secret the server sealed (Fernet, with the master key this bench gave it)."""
        return Fernet(self.master_key.encode()).decrypt(token.encode()).decode()

    def seal(self, value: str) -> str:
        return Fernet(self.master_key.encode()).encrypt(value.encode()).decode()

    def stop(self) -> None:
        stop_process(self.process, 90)


def start_server(
    name: str,
    data_dir: Path,
    database_url: str,
    *,
    env: dict[str, str] | None = None,
    access_key: tuple[str, str] | None = None,
    master_key: str | None = None,
    nofile: int | None = None,
    ready_timeout: float = 120.0,
) -> Server:
    """Start ``rkvstore serve`` and wait until it answers HTTP.

    Throttling is off (``RKVSTORE_RATE_LIMIT_PER_SECOND=0``): the benchmarks
    send far more than the default 50 calls a second of one AccessKey.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    probe_dir = data_dir / "probe"
    probe_dir.mkdir(exist_ok=True)
    port = free_port()
    key_id, key_secret = access_key or (
        "LTAIbench" + secrets.token_hex(6),
        "Sk" + secrets.token_urlsafe(24),
    )
    master_key = master_key or Fernet.generate_key().decode()
    python_path = [str(PROBE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    server_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(python_path),
        "RKVSTORE_BENCH_PROBE_DIR": str(probe_dir),
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_ID": key_id,
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_SECRET": key_secret,
        "RKVSTORE_MASTER_KEY": master_key,
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        **(env or {}),
    }
    args = [sys.executable, "-m", "rkvstore.cli", "serve", "--port", str(port)]
    args += ["--data-dir", str(data_dir), "--database-url", database_url]
    args += ["--log-level", "WARNING"]
    output = data_dir / "server.out"
    with output.open("ab") as log:
        process = subprocess.Popen(
            args,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if nofile is None else (lambda: _raise_nofile(nofile)),
        )
    server = Server(
        name,
        process,
        f"127.0.0.1:{port}",
        key_id,
        key_secret,
        master_key,
        database_url,
        data_dir,
        probe_dir,
        {k: v for k, v in (env or {}).items()},
    )
    if not wait_http(server.endpoint, process, ready_timeout):
        server.stop()
        tail = output.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name}: rkvstore serve did not start:\n{tail}")
    return server


def wait_http(endpoint: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether ``endpoint`` answers HTTP within ``timeout`` while ``process`` lives."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"http://{endpoint}/", timeout=1)
            return True
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.2)


@dataclass
class NullServer:
    """``bench/_null_app.py`` in a subprocess: the client's and HTTP's own cost."""

    process: subprocess.Popen[bytes]
    endpoint: str

    def client(self, timeout: float = 120.0) -> RpcClient:
        """Signed like a call to rkvstore (same client, same work), answered by no one."""
        return RpcClient(
            self.endpoint,
            "LTAInull" + secrets.token_hex(6),
            Secret("Sk" + "n" * 30),
            timeout=timeout,
        )

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process, 30)


def start_null_server(ready_timeout: float = 60.0) -> NullServer:
    port = free_port()
    script = Path(__file__).resolve().parent / "_null_app.py"
    process = subprocess.Popen([sys.executable, str(script), str(port)])
    server = NullServer(process, f"127.0.0.1:{port}")
    if not wait_http(server.endpoint, process, ready_timeout):
        server.stop()
        raise RuntimeError("bench/_null_app.py did not start")
    return server


def wait_normal(client: RpcClient, instance_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The instance's attributes once it is Normal."""
    deadline = time.monotonic() + timeout
    while True:
        attr = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
        item: dict[str, Any] = attr["Instances"]["DBInstanceAttribute"][0]
        if item["InstanceStatus"] == "Normal":
            return item
        if time.monotonic() > deadline:
            raise RuntimeError(f"{instance_id} did not become Normal")
        time.sleep(0.2)


def wait_idle(
    server: Server, *, below: float = 0.05, window: float = 2.0, timeout: float = 300.0
) -> tuple[float, float]:
    """Wait until the server uses less than ``below`` of a core over ``window`` seconds.

    Returns (seconds waited, CPU seconds spent meanwhile); gives up after ``timeout``.
    """
    started, cpu0 = time.monotonic(), server.cpu()
    last = cpu0
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = server.cpu()
        if now - last < below * window:
            break
        last = now
    return time.monotonic() - started, server.cpu() - cpu0


def answer_code(response: httpx.Response) -> str:
    """``OK`` or the error's code (``HTTP<status>`` when the body says none)."""
    if response.status_code == 200:
        return "OK"
    try:
        return str(response.json().get("Code") or f"HTTP{response.status_code}")
    except ValueError:
        return f"HTTP{response.status_code}"


# --------------------------------------------------------------------------- blocks of load


@dataclass
class Block:
    """One block of closed-loop load: what came back, and what it cost."""

    ok: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = 0.0  # seconds, of the process measured (if any)
    client_cpu: float = 0.0  # seconds, of this (benchmark) process

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return median(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


def drive(
    clients: int,
    seconds: float,
    open_worker: Callable[[int], W],
    call: Callable[[W, int], str],
    close_worker: Callable[[W], None],
    server_cpu: Callable[[], float] | None = None,
) -> Block:
    """``clients`` threads, each with its own connection(s) from ``open_worker``, calling
    ``call(worker, n)`` back to back for ``seconds`` once all are connected.

    ``call`` answers ``OK`` or an error code; an exception counts under its class name.
    """
    block = Block()
    lock = threading.Lock()
    deadline = [float("inf")]  # set once every client is connected
    ready = threading.Barrier(clients + 1, timeout=120)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            state = open_worker(index)
        except BaseException as exc:
            failures.append(exc)
            ready.abort()
            return
        try:
            ready.wait()
            n = 0
            while time.monotonic() < deadline[0]:
                started = time.perf_counter()
                try:
                    code = call(state, n)
                except Exception as exc:
                    code = type(exc).__name__
                took = time.perf_counter() - started
                n += 1
                with lock:
                    if code == "OK":
                        block.ok += 1
                        block.latencies.append(took)
                    else:
                        block.codes[code] += 1
        finally:
            close_worker(state)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join(30)
        raise RuntimeError(f"a client could not connect: {failures[:1]}") from None
    cpu0 = server_cpu() if server_cpu else 0.0
    client0 = time.process_time()
    began = time.monotonic()
    deadline[0] = began + seconds
    for thread in threads:
        thread.join(seconds + 180)
    block.seconds = time.monotonic() - began
    block.client_cpu = time.process_time() - client0
    block.server_cpu = (server_cpu() - cpu0) if server_cpu else 0.0
    return block
