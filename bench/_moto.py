"""moto's server (``moto[server]``, the ``bench`` extra) for bench/throughput.py.

``moto_server`` mocks AWS's APIs, ElastiCache among them, in one Flask process:
the nearest thing to another control plane's user management that runs here.
It is driven through boto3, as its users would.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from _common import free_port, process_cpu

MOTO_REGION = "us-east-1"


@dataclass
class Moto:
    process: subprocess.Popen[bytes]
    endpoint: str

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        # No retries: an error is counted, not hidden behind a second try.
        return boto3.session.Session().client(
            "elasticache",
            endpoint_url=self.endpoint,
            region_name=MOTO_REGION,
            aws_access_key_id="benchbench",
            aws_secret_access_key="benchbenchbench",
            config=Config(retries={"total_max_attempts": 1}, max_pool_connections=2),
        )

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def hold_users(self, count: int) -> int:
        """As many users as ``count`` (moto has a user "default" of its own); how many."""
        client = self.client()
        for i in range(max(0, count - 1)):
            client.create_user(
                UserId=f"seed{i}",
                UserName=f"seed{i}",
                Engine="redis",
                AccessString="on ~* +@all",
                Passwords=["Bench_" + secrets.token_hex(12)],
            )
        return len(client.describe_users()["Users"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def start_moto() -> Moto:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a line per request otherwise
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(endpoint + "/moto-api/", timeout=1)
            return Moto(process, endpoint)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto_server did not start: pip install -e '.[bench]'") from None
            time.sleep(0.2)


def moto_code(call: Callable[[], Any]) -> str:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return "OK"
