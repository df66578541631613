"""Many clients resetting the accounts of a few instances: the slot that waits vs failing fast.

    python bench/contention.py [--seconds 3] [--repeat 3] [--clients 8,32,128]

Starts two ``rkvstore serve`` side by side (SQLite, temporary data dirs,
throttling off — said again in the output): one as shipped, where a call
that finds its instance's task slot busy waits for it
(``RKVSTORE_TASK_WAIT_SECONDS=30``), and one failing fast (``=0``), which is
how rkvstore behaved before. Each gets the same two STAND_ALONE instances
with four accounts each. Then, for every client count and repetition, the
two servers are driven in interleaved blocks of ``--seconds`` (their order
alternating): that many threads, each with its own keep-alive connection,
send signed ResetAccountPassword calls on random accounts back to back.

Printed per server and client count: successful resets per second (median
and spread over the repetitions), the share answered TaskExists, other
errors, p50/p99 latency of the successful ones, and the ratio of successful
throughput to that at the smallest client count. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rkvstore.client import RpcClient
from rkvstore.secret import Secret

INSTANCES = 2
ACCOUNTS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _password() -> str:
    return "Bench_" + secrets.token_hex(8) + "x"


@dataclass
class Server:
    name: str
    wait: str
    process: subprocess.Popen[bytes]
    endpoint: str
    key: tuple[str, str]
    targets: list[tuple[str, str]] = field(default_factory=list)  # (instance, account)

    def client(self) -> RpcClient:
        return RpcClient(self.endpoint, self.key[0], Secret(self.key[1]), timeout=120)


def start(name: str, wait: str, data_dir: Path) -> Server:
    port = _free_port()
    key = ("LTAIbench" + secrets.token_hex(4), secrets.token_urlsafe(24))
    env = {
        **os.environ,
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_ID": key[0],
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_SECRET": key[1],
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        "RKVSTORE_TASK_WAIT_SECONDS": wait,
    }
    args = [sys.executable, "-m", "rkvstore.cli", "serve", "--port", str(port)]
    args += ["--data-dir", str(data_dir), "--log-level", "WARNING"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{name}: rkvstore serve did not start") from None
            time.sleep(0.1)
    return Server(name, wait, process, f"127.0.0.1:{port}", key)


def _rss_kib(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def provision(server: Server) -> None:
    with server.client() as client:
        ids = [
            client.call("CreateInstance", {"NodeType": "STAND_ALONE"})["InstanceId"]
            for _ in range(INSTANCES)
        ]
        for iid in ids:
            deadline = time.monotonic() + 60
            while True:
                attr = client.call("DescribeInstanceAttribute", {"InstanceId": iid})
                if attr["Instances"]["DBInstanceAttribute"][0]["InstanceStatus"] == "Normal":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{iid} did not become Normal")
                time.sleep(0.2)
            for a in range(ACCOUNTS):
                name = f"acct{a}"
                params = {"InstanceId": iid, "AccountName": name, "AccountPassword": _password()}
                client.call("CreateAccount", params)
                server.targets.append((iid, name))


@dataclass
class Block:
    ok: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0


def drive(server: Server, clients: int, seconds: float) -> Block:
    block = Block()
    lock = threading.Lock()
    stop = float("inf")  # set once every client is connected
    ready = threading.Barrier(clients + 1, timeout=60)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with server.client() as client:
            client.call("DescribeRegions")  # connect first
            ready.wait()
            while time.monotonic() < stop:
                iid, name = rng.choice(server.targets)
                params = {"InstanceId": iid, "AccountName": name, "AccountPassword": _password()}
                started = time.perf_counter()
                response = client.request("ResetAccountPassword", params)
                took = time.perf_counter() - started
                code = "OK" if response.status_code == 200 else response.json().get("Code", "?")
                with lock:
                    if code == "OK":
                        block.ok += 1
                        block.latencies.append(took)
                    else:
                        block.codes[code] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    began = time.monotonic()
    stop = began + seconds
    for thread in threads:
        thread.join(seconds + 180)
    block.seconds = time.monotonic() - began
    return block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="8,32,128")
    parser.add_argument(
        "--memory",
        type=int,
        default=0,
        help="instead: this many resets (8 clients) on the waiting server, RSS as they go",
    )
    args = parser.parse_args()
    if args.memory:
        memory(max(1000, min(args.memory, 200_000)))
        return
    counts = [max(1, min(int(c), 512)) for c in args.clients.split(",")]
    repeat = max(1, min(args.repeat, 20))
    seconds = max(0.5, min(args.seconds, 60.0))

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{INSTANCES} STAND_ALONE instances x {ACCOUNTS} accounts; blocks of {seconds:.1f} s; "
        f"{repeat} repetitions; throttling off on both servers"
    )
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="rkvstore-bench-") as tmp:
        try:
            for name, wait in (("waits (30 s)", "30"), ("fails fast (0)", "0")):
                directory = Path(tmp) / name.split()[0]
                directory.mkdir()
                servers.append(start(name, wait, directory))
            for server in servers:
                provision(server)
            results: dict[tuple[str, int], list[Block]] = {}
            rss: dict[str, list[tuple[int, int]]] = {s.name: [(0, _rss_kib(s))] for s in servers}
            for rep in range(repeat):
                for clients in counts:
                    order = servers if (rep + clients) % 2 == 0 else list(reversed(servers))
                    for server in order:
                        block = drive(server, clients, seconds)
                        results.setdefault((server.name, clients), []).append(block)
                for server in servers:
                    done = sum(
                        b.ok
                        for (name, _), blocks in results.items()
                        if name == server.name
                        for b in blocks
                    )
                    rss[server.name].append((done, _rss_kib(server)))
            report(servers, counts, results)
            print()
            # Memory after each repetition: flat once warm (threads, connections)
            # if nothing is kept per password set.
            for server in servers:
                steps = ", ".join(f"{kib / 1024:.1f} MiB after {n}" for n, kib in rss[server.name])
                print(f"{server.name}: server RSS {steps} successful resets")
        finally:
            for server in servers:
                server.process.send_signal(signal.SIGTERM)
            for server in servers:
                try:
                    server.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.process.kill()


def memory(resets: int) -> None:
    """The server's RSS as resets go by: flat after warm-up if nothing is kept per password."""
    with tempfile.TemporaryDirectory(prefix="rkvstore-bench-") as tmp:
        server = start("waits", "30", Path(tmp))
        try:
            provision(server)
            done, samples = 0, [(0, _rss_kib(server))]
            for _ in range(10_000):  # bounded; ends on the count
                if done >= resets:
                    break
                done += drive(server, 8, 2.0).ok
                samples.append((done, _rss_kib(server)))
            print(f"RSS of the server over {done} resets (8 clients):")
            for count, kib in samples:
                print(f"  {count:7d} resets: {kib / 1024:7.1f} MiB")
            half = [x for x in samples if x[0] >= done / 2]
            (n0, k0), (n1, k1) = half[0], half[-1]
            per = (k1 - k0) * 1024 / max(1, n1 - n0)
            print(f"second half: {per:.1f} bytes per reset ({(k1 - k0) / 1024:+.1f} MiB)")
        finally:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=60)


def report(
    servers: list[Server], counts: list[int], results: dict[tuple[str, int], list[Block]]
) -> None:
    print()
    print(
        f"{'server':15s} {'clients':>7s} {'ok/s med':>9s} {'spread':>15s} {'TaskExists':>10s} "
        f"{'other':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'ok/s vs first':>13s}"
    )
    for server in servers:
        base: float | None = None
        for clients in counts:
            blocks = results[(server.name, clients)]
            rates = [b.ok / b.seconds for b in blocks]
            med = statistics.median(rates)
            base = base or med
            attempts = sum(b.ok + sum(b.codes.values()) for b in blocks)
            busy = sum(b.codes.get("TaskExists", 0) for b in blocks)
            other = sum(sum(b.codes.values()) for b in blocks) - busy
            latencies = [x for b in blocks for x in b.latencies]
            print(
                f"{server.name:15s} {clients:7d} {med:9.1f} "
                f"{min(rates):7.1f}-{max(rates):<7.1f} {100 * busy / max(1, attempts):9.1f}% "
                f"{other:6d} {1000 * statistics.median(latencies or [float('nan')]):8.1f} "
                f"{1000 * _percentile(latencies, 0.99):8.1f} {med / base:13.2f}"
            )
            others = Counter[str]()
            for b in blocks:
                others.update({k: v for k, v in b.codes.items() if k != "TaskExists"})
            if others:
                print(f"{'':15s} other codes: {dict(others)}")


if __name__ == "__main__":
    main()
