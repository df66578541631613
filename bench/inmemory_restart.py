"""How long an account is locked out when a node that keeps accounts in memory restarts.

    python bench/inmemory_restart.py [--repeat 5] [--server-env RKVSTORE_IN_MEMORY_VERIFY_SECONDS=1]

A redis-server started with options only (``--port P --requirepass X``, cwd an
empty directory: no config file, no ACL file, as the official container runs
it) is registered with ``AdminUserName=default``; an account ``bench`` is made.
Each repetition kills the node (SIGKILL), starts it again with the same
options, and from the moment it answers PING again tries ``AUTH bench <pw>``
every 10 ms until it succeeds: the lockout. Printed: the median and the spread
(min-max) over the repetitions, in seconds, and the setting it ran with.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from _common import (
    common_arguments,
    free_port,
    print_end,
    print_start,
    server_env,
    spread,
    start_server,
    stop_process,
)

BOUND = 60.0  # seconds: a lockout longer than this is reported as such


def start_node(binary: str, port: int, password: str, cwd: Path) -> subprocess.Popen[bytes]:
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password]
    command += ["--save", "", "--appendonly", "no"]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def logs_in(port: int, user: str | None, password: str) -> bool:
    client = redis.Redis(port=port, username=user, password=password, socket_timeout=1)
    try:
        return client.ping() is True
    except (redis.AuthenticationError, redis.ConnectionError):
        return False
    finally:
        client.close()


def wait(what: str, probe: object, bound: float, step: float) -> float:
    """Seconds until ``probe()`` is true (polled every ``step``), at most ``bound``."""
    started = time.monotonic()
    while time.monotonic() - started < bound:
        if probe():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(step)
    raise SystemExit(f"{what}: not within {bound} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    common_arguments(parser, "sqlite")
    args = parser.parse_args()
    env = server_env(args.server_env)
    binary = shutil.which("redis-server") or "redis-server"
    started = print_start("lockout after a restart of a node that keeps accounts in memory")
    with tempfile.TemporaryDirectory(prefix="rkv-bench-inmemory-") as tmp:
        root = Path(tmp)
        (root / "node").mkdir()
        admin = "Adm!" + secrets.token_hex(12)
        account = "Pw!" + secrets.token_hex(12) + "7"
        port = free_port()
        node = start_node(binary, port, admin, root / "node")
        server = start_server("sqlite", root / "data", f"sqlite:///{root / 'rkvstore.db'}", env=env)
        try:
            wait("node up", lambda: logs_in(port, None, admin), 15, 0.05)
            with server.client() as client:
                body = client.call(
                    "RegisterInstance",
                    {
                        "Endpoint": f"127.0.0.1:{port}",
                        "AdminUserName": "default",
                        "AdminPassword": admin,
                    },
                )
                client.call(
                    "CreateAccount",
                    {
                        "InstanceId": body["InstanceId"],
                        "AccountName": "bench",
                        "AccountPassword": account,
                    },
                )
            wait("account on the node", lambda: logs_in(port, "bench", account), 15, 0.01)
            lockouts = []
            for repetition in range(args.repeat):
                node.kill()
                node.wait(timeout=10)
                node = start_node(binary, port, admin, root / "node")
                wait("node up again", lambda: logs_in(port, None, admin), 15, 0.01)
                lockout = wait("account back", lambda: logs_in(port, "bench", account), BOUND, 0.01)
                lockouts.append(lockout)
                print(f"  restart {repetition + 1}: account back after {lockout:.2f} s")
                time.sleep(0.5)  # not in step with the watch
        finally:
            server.stop()
            stop_process(node, 10)
    setting = env.get("RKVSTORE_IN_MEMORY_VERIFY_SECONDS", "1 (default)")
    print(f"RKVSTORE_IN_MEMORY_VERIFY_SECONDS={setting}")
    print(f"lockout after a restart, s: median (min-max) over {len(lockouts)}: {spread(lockouts)}")
    print_end(started)


if __name__ == "__main__":
    main()
