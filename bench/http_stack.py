"""The HTTP stack side by side: parsers (httptools, h11) and event loops (uvloop, asyncio).

    python bench/http_stack.py [--requests 300] [--repetitions 5]
    python bench/http_stack.py --stacks httptools/uvloop,h11/asyncio --workers 2
    python bench/http_stack.py --stacks "h11/asyncio,h11/asyncio+RKVSTORE_WORKERS=2"

Starts one ``rkvstore serve`` per stack (SQLite, a temporary data dir each,
throttling off), then, in interleaved blocks (every stack once per
repetition, the order rotated), sends ``--requests`` sequential requests
over one keep-alive connection:

- ``signed``: V3-signed ``DescribeRegions`` (``RpcClient``): signature check,
  key lookup, nonce, answer;
- ``refused``: an unsigned ``GET /`` answered 400 ``MissingSignature``: the
  HTTP path and little else.

With ``--clients K``, K client processes share the block's requests, each
sequential on its own connection (throughput: ``--workers`` or a stack's
``+RKVSTORE_WORKERS=N``; ``+RKVSTORE_DATABASE_URL=...`` for PostgreSQL).

Per stack and kind: p50 latency, the server's CPU per request (utime + stime
of the server's processes, its workers included, from /proc) and requests
per second, median and spread (min-max) over the repetitions, and the ratios
to the first stack. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from rkvstore.client import RpcClient
from rkvstore.secret import Secret

TICKS = os.sysconf("SC_CLK_TCK")
MASTER_KEY = Fernet.generate_key().decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its children still running (the workers)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


@dataclass
class Stack:
    name: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    endpoint: str = ""
    results: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _start(stack: Stack, root: Path, key: tuple[str, str], workers: int) -> None:
    port = _free_port()
    data_dir = root / f"stack-{len(list(root.iterdir()))}"
    env = {
        **os.environ,
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_ID": key[0],
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_SECRET": key[1],
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        # One key for every stack: stacks given one PostgreSQL database share its secrets.
        "RKVSTORE_MASTER_KEY": MASTER_KEY,
        "RKVSTORE_WORKERS": str(workers),
        **stack.env,
    }
    args = [sys.executable, "-m", "rkvstore.cli", "serve", "--port", str(port)]
    args += ["--data-dir", str(data_dir), "--log-level", "WARNING"]
    data_dir.mkdir()
    with (data_dir / "server.out").open("ab") as out:
        stack.process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    stack.endpoint = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{stack.endpoint}/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{stack.name} did not start")


def _client(endpoint: str, kind: str, count: int, key: tuple[str, str]) -> list[float]:
    """``count`` sequential requests over one keep-alive connection: their times."""
    times: list[float] = []
    send: Callable[[], int]
    if kind == "signed":
        client = RpcClient(endpoint, key[0], Secret(key[1]))

        def send() -> int:
            return client.request("DescribeRegions").status_code

        closer: Callable[[], None] = client.close
    else:
        http = httpx.Client(base_url=f"http://{endpoint}", timeout=30)

        def send() -> int:
            return http.get("/").status_code

        closer = http.close
    try:
        send()  # the connection open before the clock starts
        for _ in range(count):
            started = time.perf_counter()
            status = send()
            times.append(time.perf_counter() - started)
            assert status in (200, 400), status
    finally:
        closer()
    return times


def _block(
    stack: Stack, kind: str, count: int, key: tuple[str, str], clients: int
) -> tuple[float, float, float]:
    """(p50 ms, server CPU ms per request, requests/s) of ``count`` requests from
    ``clients`` client processes at once, each sequential on its own connection."""
    assert stack.process is not None
    cpu0 = _cpu_seconds(stack.process.pid)
    started = time.perf_counter()
    if clients == 1:
        times = _client(stack.endpoint, kind, count, key)
    else:
        with multiprocessing.get_context("fork").Pool(clients) as pool:
            share = [(stack.endpoint, kind, count // clients, key)] * clients
            times = [t for part in pool.starmap(_client, share) for t in part]
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(stack.process.pid) - cpu0
    return statistics.median(times) * 1000, cpu / len(times) * 1000, len(times) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--clients", type=int, default=1, help="client processes at once (requests shared)"
    )
    parser.add_argument(
        "--stacks",
        default="h11/asyncio,httptools/asyncio,h11/uvloop,httptools/uvloop",
        help="parser/loop pairs, each with +NAME=VALUE settings for its server if wanted; "
        "the first is the baseline of the ratios",
    )
    args = parser.parse_args()
    stacks = []
    for spec in args.stacks.split(","):
        pair, *extra = spec.split("+")  # parser/loop, then any NAME=VALUE for the server
        http_parser, loop = pair.split("/")
        env = {"RKVSTORE_HTTP_PARSER": http_parser, "RKVSTORE_EVENT_LOOP": loop}
        env.update(item.split("=", 1) for item in extra)
        stacks.append(Stack(spec, env))
    key = ("LTAIbench" + secrets.token_hex(6), "Sk" + secrets.token_urlsafe(24))
    kinds = ("signed", "refused")
    with tempfile.TemporaryDirectory(prefix="rkv-http-bench-") as tmp:
        try:
            for stack in stacks:
                _start(stack, Path(tmp), key, args.workers)
            load = os.getloadavg()
            for rep in range(args.repetitions):
                order = stacks[rep % len(stacks) :] + stacks[: rep % len(stacks)]
                for stack in order:
                    for kind in kinds:
                        result = _block(stack, kind, args.requests, key, args.clients)
                        stack.results.setdefault(kind, []).append(result)
        except BaseException:
            for out in sorted(Path(tmp).glob("*/server.out")):  # before the dir goes
                lines = out.read_text(errors="replace").splitlines()
                print(f"--- {out.parent.name}:", *lines[-60:], sep="\n", file=sys.stderr)
            raise
        finally:
            for stack in stacks:
                if stack.process is not None and stack.process.poll() is None:
                    stack.process.send_signal(signal.SIGTERM)
                    stack.process.wait(timeout=30)
    print(
        f"{args.repetitions} interleaved repetitions x {args.requests} requests from "
        f"{args.clients} client(s), {args.workers} worker(s) unless a stack says otherwise; "
        f"load average at start {load[0]:.2f}, {os.cpu_count()} cores"
    )
    base = stacks[0]
    for kind in kinds:
        print(f"\n{kind}:")
        print(
            f"  {'stack':34s} {'p50 ms':>20s} {'server CPU ms/req':>20s} {'req/s':>16s}"
            f"  ratios p50 / CPU / req/s"
        )
        base_p50, base_cpu, base_rate = (
            statistics.median(r[i] for r in base.results[kind]) for i in range(3)
        )
        for stack in stacks:
            cols = [[r[i] for r in stack.results[kind]] for i in range(3)]
            p50, cpu, rate = (statistics.median(c) for c in cols)
            spread = [f"({min(c):.2f}-{max(c):.2f})" for c in cols]
            print(
                f"  {stack.name:34s} {p50:6.3f} {spread[0]:13s} {cpu:6.3f} {spread[1]:13s}"
                f" {rate:6.0f} ({min(cols[2]):.0f}-{max(cols[2]):.0f})"
                f"  {p50 / base_p50:.2f} / {cpu / base_cpu:.2f} / {rate / base_rate:.2f}"
            )


if __name__ == "__main__":
    main()
