"""ResetAccountPassword end to end, beside the floor measured in the same run.

    python bench/reset.py [--requests 300]

Starts ``rkvstore serve`` (SQLite, a temporary data dir), creates a
STAND_ALONE and a MASTER_SLAVE instance with an account, then for each:

- end to end: signed V3 ResetAccountPassword over one keep-alive HTTP
  connection, sequentially: p50/p99 latency and requests per second;
- floor: ``ACL SETUSER … #hash`` then ``ACL SAVE`` sent straight to the
  instance's master node with redis-py, the same number of times;

and prints the ratio end-to-end / floor (p50). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from rkvstore.client import RpcClient
from rkvstore.config import Settings
from rkvstore.crypto import load_secret_box
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.secret import Secret
from rkvstore.store import repo
from rkvstore.store.db import make_engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _password(i: int) -> str:
    return f"Bench_pw_{i:06d}x"


def _wait_normal(client: RpcClient, instance_id: str) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        attr = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
        item = attr["Instances"]["DBInstanceAttribute"][0]
        if item["InstanceStatus"] == "Normal":
            return int(item["Port"])
        time.sleep(0.2)
    raise RuntimeError(f"{instance_id} did not become Normal")


def _management_password(data_dir: Path, instance_id: str) -> Secret:
    """The operator's own machine: read it the way rkvstore does (database + master key)."""
    settings = Settings(data_dir=data_dir)
    box = load_secret_box(settings.data_dir, None)
    engine = make_engine(settings.effective_database_url)
    with engine.connect() as conn:
        instance = repo.get_instance_any_tenant(conn, instance_id)
    engine.dispose()
    assert instance is not None
    return box.open(instance.mgmt_password_encrypted)


def _end_to_end(client: RpcClient, instance_id: str, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        response = client.request(
            "ResetAccountPassword",
            {"InstanceId": instance_id, "AccountName": "bench", "AccountPassword": _password(i)},
        )
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"reset answered {response.status_code}: {response.text}")
    return latencies


def _floor(port: int, mgmt: Secret, n: int) -> list[float]:
    node = redis.Redis(port=port, username=MANAGEMENT_USER, password=mgmt.reveal())
    latencies = []
    for i in range(n):
        digest = hashlib.sha256(_password(i).encode()).hexdigest()
        started = time.perf_counter()
        node.execute_command(
            "ACL", "SETUSER", "bench_floor", "reset", "on", f"#{digest}", "~*", "+@all"
        )
        node.execute_command("ACL", "SAVE")
        latencies.append(time.perf_counter() - started)
    node.execute_command("ACL", "DELUSER", "bench_floor")
    node.execute_command("ACL", "SAVE")
    node.close()
    return latencies


def _report(label: str, e2e: list[float], floor: list[float]) -> None:
    p50, p99 = statistics.median(e2e), _percentile(e2e, 0.99)
    f50, f99 = statistics.median(floor), _percentile(floor, 0.99)
    print(
        f"{label:13s} end-to-end p50 {p50 * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms  "
        f"{len(e2e) / sum(e2e):7.1f} req/s | floor p50 {f50 * 1000:6.2f} ms  "
        f"p99 {f99 * 1000:6.2f} ms"
        f"  {len(floor) / sum(floor):7.1f} ops/s | ratio p50 {p50 / f50:5.2f}  p99 {p99 / f99:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    n = max(10, min(args.requests, 10_000))

    with tempfile.TemporaryDirectory(prefix="rkvstore-bench-") as tmp:
        data_dir = Path(tmp)
        port = _free_port()
        key_id, key_secret = "LTAIbench", secrets.token_urlsafe(24)
        env = {
            **os.environ,
            "RKVSTORE_BOOTSTRAP_ACCESS_KEY_ID": key_id,
            "RKVSTORE_BOOTSTRAP_ACCESS_KEY_SECRET": key_secret,
            "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rkvstore.cli",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("rkvstore serve did not start") from None
                    time.sleep(0.1)
            with RpcClient(f"127.0.0.1:{port}", key_id, Secret(key_secret)) as client:
                print(f"ResetAccountPassword, {n} sequential requests each (V3, keep-alive)")
                for node_type in ("STAND_ALONE", "MASTER_SLAVE"):
                    iid = client.call("CreateInstance", {"NodeType": node_type})["InstanceId"]
                    redis_port = _wait_normal(client, iid)
                    client.call(
                        "CreateAccount",
                        {
                            "InstanceId": iid,
                            "AccountName": "bench",
                            "AccountPassword": _password(0),
                        },
                    )
                    _end_to_end(client, iid, 10)  # warm-up
                    e2e = _end_to_end(client, iid, n)
                    floor = _floor(redis_port, _management_password(data_dir, iid), n)
                    _report(node_type, e2e, floor)
                    client.call("DeleteInstance", {"InstanceId": iid})
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
