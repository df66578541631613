"""The command line as an operator uses it: ``rkvstore call`` and ``rkvstore serve``.

Everything runs as a subprocess (``python -m rkvstore.cli``) against a live server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rkvstore.client import RpcClient
from rkvstore.secret import Secret
from tests.api.sdk_clients import NEW_V3, REGION, SdkCaller
from tests.conftest import ARTIFACT_DIRS, LiveServer, free_port, remember_secret, start_server

# tests/conftest.py's start_server leaves its server.out handle to the garbage
# collector; with filterwarnings=error that ResourceWarning fails the first test
# to set up a server. Only that one warning is let through.

REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
CLI = [sys.executable, "-m", "rkvstore.cli"]
CLI_TIMEOUT = 60
STOP_TIMEOUT = 15
# What the caller's environment could hold that would change what the CLI or the
# server does: dropped so that each test says exactly what it gives.
DROPPED_ENV = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in DROPPED_ENV and not k.startswith("RKVSTORE_")
    }
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=clean_env(env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


@pytest.fixture
def key_file(live_server: LiveServer, tmp_path: Path) -> Path:
    """The server's AccessKey secret in a file of its own (0600), as --access-key-secret-file
    takes it; outside the server's data dir."""
    path = tmp_path / "access-key-secret"
    path.touch(mode=0o600)
    path.write_text(live_server.access_key_secret + "\n")
    return path


def key_options(server: LiveServer, key_file: Path) -> list[str]:
    return [
        "--endpoint",
        server.url,
        "--access-key-id",
        server.access_key_id,
        "--access-key-secret-file",
        str(key_file),
    ]


def json_out(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(result.stdout)
    return body


# --------------------------------------------------------------------------- rkvstore call


def test_call_with_options(live_server: LiveServer, key_file: Path) -> None:
    result = run_cli("call", "DescribeRegions", *key_options(live_server, key_file))
    assert result.returncode == 0, result.stderr
    body = json_out(result)
    assert REQUEST_ID.match(body["RequestId"])
    assert body["RegionIds"]["KVStoreRegion"][0]["RegionId"] == REGION


def test_call_with_credentials_from_the_environment(live_server: LiveServer) -> None:
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": live_server.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": live_server.access_key_secret,
    }
    result = run_cli("call", "DescribeRegions", "--endpoint", live_server.url, env=env)
    assert result.returncode == 0, result.stderr
    assert REQUEST_ID.match(json_out(result)["RequestId"])


def test_call_with_endpoint_from_the_environment(live_server: LiveServer) -> None:
    env = {
        "RKVSTORE_ENDPOINT": live_server.endpoint,  # host:port, no scheme
        "ALIBABA_CLOUD_ACCESS_KEY_ID": live_server.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": live_server.access_key_secret,
    }
    result = run_cli("call", "DescribeRegions", env=env)
    assert result.returncode == 0, result.stderr
    assert json_out(result)["RegionIds"]


def test_error_answer_exits_non_zero_and_prints_it(live_server: LiveServer, key_file: Path) -> None:
    result = run_cli("call", "DescribeZones", *key_options(live_server, key_file))
    assert result.returncode != 0
    body = json_out(result)
    assert body["Code"] == "MissingParameter"
    assert body["Message"] == (
        'The input parameter "RegionId" that is mandatory for processing this request '
        "is not supplied."
    )
    assert REQUEST_ID.match(body["RequestId"])


def test_wrong_secret_exits_non_zero(live_server: LiveServer) -> None:
    wrong = remember_secret("Wr0ng" + secrets.token_urlsafe(18))
    args = ["--endpoint", live_server.url, "--access-key-id", live_server.access_key_id]
    result = run_cli(
        "call", "DescribeRegions", *args, env={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": wrong}
    )
    assert result.returncode != 0
    assert json_out(result)["Code"] == "SignatureDoesNotMatch"
    assert wrong not in result.stdout + result.stderr


def test_a_secret_on_the_command_line_is_refused_and_the_message_says_how(
    live_server: LiveServer,
) -> None:
    """Issue 9, finding 10: a command line is visible to every user (ps)."""
    secret = live_server.access_key_secret
    args = ["--endpoint", live_server.url, "--access-key-id", live_server.access_key_id]
    result = run_cli("call", "DescribeRegions", *args, "--access-key-secret", secret)
    assert result.returncode == 2, result
    message = " ".join(result.stderr.split())  # click wraps long lines
    assert "--access-key-secret takes no secret on the command line" in message
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in message
    assert "--access-key-secret-file PATH" in message
    assert secret not in result.stdout + result.stderr

    env = {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret}
    password = remember_secret("Secr3t_pw!" + secrets.token_hex(6))
    result = run_cli("call", "DescribeRegions", *args, "--Password", password, env=env)
    assert result.returncode == 2, result
    message = " ".join(result.stderr.split())
    assert "--Password takes no secret on the command line" in message
    assert "'--Password -'" in message and "'--Password-file PATH'" in message
    assert password not in result.stdout + result.stderr


def test_secrets_from_a_prompt_and_from_files(live_server: LiveServer, tmp_path: Path) -> None:
    args = ["--endpoint", live_server.url, "--access-key-id", live_server.access_key_id]
    result = run_cli(
        "call",
        "DescribeRegions",
        *args,
        "--access-key-secret",
        "-",
        stdin=live_server.access_key_secret + "\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    password_file = tmp_path / "password"
    password_file.touch(mode=0o600)
    password_file.write_text(remember_secret("Secr3t_pw!" + secrets.token_hex(6)) + "\n")
    env = {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": live_server.access_key_secret}
    result = run_cli(
        "call", "DescribeRegions", *args, "--Password-file", str(password_file), env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert REQUEST_ID.match(json_out(result)["RequestId"])


def test_missing_access_key_is_a_usage_error(live_server: LiveServer) -> None:
    result = run_cli("call", "DescribeRegions", "--endpoint", live_server.url)
    assert result.returncode == 2, result
    assert "access-key-id" in result.stderr


@pytest.mark.parametrize(
    "region_args",
    [["--RegionId", REGION], [f"--RegionId={REGION}"]],
    ids=["separate", "equals"],
)
def test_parameter_forms(live_server: LiveServer, key_file: Path, region_args: list[str]) -> None:
    result = run_cli("call", "DescribeZones", *key_options(live_server, key_file), *region_args)
    assert result.returncode == 0, result.stdout + result.stderr
    zones = json_out(result)["Zones"]["KVStoreZone"]
    assert zones
    assert {z["RegionId"] for z in zones} == {REGION}


def test_secret_parameter_read_from_stdin(live_server: LiveServer, key_file: Path) -> None:
    password = remember_secret("Secr3t_pw!" + secrets.token_hex(6))
    started = time.monotonic()
    result = run_cli(
        "call",
        "DescribeRegions",
        *key_options(live_server, key_file),
        "--Password",
        "-",
        stdin=password + "\n",
    )
    assert time.monotonic() - started < CLI_TIMEOUT
    assert result.returncode == 0, result.stdout + result.stderr
    assert REQUEST_ID.match(json_out(result)["RequestId"])
    assert password not in result.stdout + result.stderr
    for name in ("server.out", "rkvstore.log"):
        path = live_server.data_dir / name
        if path.exists():
            assert password.encode() not in path.read_bytes(), f"the secret is in {name}"


def test_secret_parameter_from_empty_stdin_does_not_hang(
    live_server: LiveServer, key_file: Path
) -> None:
    result = run_cli(
        "call", "DescribeRegions", *key_options(live_server, key_file), "--Password", "-"
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- rkvstore serve


@dataclass
class Serve:
    """One ``rkvstore serve`` without bootstrap variables; stdout/stderr kept apart."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    stdout: Path
    stderr: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def serve(data_dir: Path, out_dir: Path, name: str) -> Iterator[Serve]:
    """Start ``rkvstore serve`` on ``data_dir``; always stopped (then killed) on exit."""
    port = free_port()
    stdout, stderr = out_dir / f"{name}.stdout", out_dir / f"{name}.stderr"
    args = [*CLI, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(args, env=clean_env(), stdout=out, stderr=err)
    server = Serve(process, port, data_dir, stdout, stderr)
    try:
        _wait_ready(server)
        yield server
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.stop()
        server.kill()


def _wait_ready(server: Serve) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"rkvstore serve exited: {server.stderr.read_text()}")
        try:
            httpx.get(f"http://{server.endpoint}/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("rkvstore serve did not start within 30 s")


@dataclass(frozen=True)
class FirstStart:
    data_dir: Path
    out_dir: Path
    credentials: dict[str, str]
    credentials_mode: int
    stdout: str
    stderr: str
    regions: dict[str, Any]

    @property
    def secret(self) -> str:
        return self.credentials["AccessKeySecret"]


def _call(endpoint: str, key_id: str, secret: str, action: str) -> dict[str, Any]:
    with RpcClient(endpoint, key_id, Secret(secret)) as client:
        return client.call(action)


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> FirstStart:
    """``rkvstore serve`` on an empty data dir with no bootstrap variables, once."""
    data_dir = tmp_path_factory.mktemp("bootstrap-data")
    ARTIFACT_DIRS.append(data_dir)  # scanned for the generated secret at the end
    out_dir = tmp_path_factory.mktemp("bootstrap-out")  # holds the printed secret: not scanned
    credentials_path = data_dir / "root-credentials.json"
    with serve(data_dir, out_dir, "first") as server:
        assert credentials_path.exists(), server.stderr.read_text()
        credentials = json.loads(credentials_path.read_text())
        secret = remember_secret(credentials["AccessKeySecret"])
        regions = _call(server.endpoint, credentials["AccessKeyId"], secret, "DescribeRegions")
    return FirstStart(
        data_dir=data_dir,
        out_dir=out_dir,
        credentials=credentials,
        credentials_mode=stat.S_IMODE(credentials_path.stat().st_mode),
        stdout=server.stdout.read_text(errors="replace"),
        stderr=server.stderr.read_text(errors="replace"),
        regions=regions,
    )


def test_first_start_writes_root_credentials_0600(first_start: FirstStart) -> None:
    assert first_start.credentials_mode == 0o600, oct(first_start.credentials_mode)
    creds = first_start.credentials
    assert {"AccountId", "AccessKeyId", "AccessKeySecret"} <= set(creds)
    assert re.fullmatch(r"\d{16}", creds["AccountId"]), creds["AccountId"]
    assert creds["AccessKeyId"]
    assert len(creds["AccessKeySecret"]) >= 16
    assert creds["AccessKeySecret"] != creds["AccessKeyId"]


def test_first_start_prints_the_secret_once_to_stderr(first_start: FirstStart) -> None:
    assert first_start.stderr.count(first_start.secret) == 1, "secret not printed exactly once"
    assert first_start.credentials["AccessKeyId"] in first_start.stderr
    assert first_start.secret not in first_start.stdout


def test_root_key_works(first_start: FirstStart) -> None:
    assert REQUEST_ID.match(first_start.regions["RequestId"])
    assert first_start.regions["RegionIds"]["KVStoreRegion"][0]["RegionId"] == REGION


def _count(db: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def test_second_start_creates_no_tenant_and_prints_no_secret(first_start: FirstStart) -> None:
    credentials_path = first_start.data_dir / "root-credentials.json"
    before = credentials_path.read_bytes()
    creds = first_start.credentials
    with serve(first_start.data_dir, first_start.out_dir, "second") as server:
        # The first key still works, and with the new SDK too.
        body = _call(server.endpoint, creds["AccessKeyId"], first_start.secret, "DescribeRegions")
        assert body["RegionIds"]
        sdk = SdkCaller(NEW_V3, server.endpoint, creds["AccessKeyId"], first_start.secret)
        assert sdk.describe_zones(REGION)["Zones"]["KVStoreZone"]
    stderr = server.stderr.read_text(errors="replace")
    assert first_start.secret not in stderr
    assert "AccessKeySecret" not in stderr
    assert "created tenant" not in stderr
    assert credentials_path.read_bytes() == before
    db = first_start.data_dir / "rkvstore.db"
    assert _count(db, "tenants") == 1
    assert _count(db, "access_keys") == 1


def test_database_and_log_do_not_hold_the_secret(first_start: FirstStart) -> None:
    needle = first_start.secret.encode()
    files = [p for p in first_start.data_dir.iterdir() if p.name.startswith("rkvstore.db")]
    assert any(p.name == "rkvstore.db" for p in files)
    for path in [*files, first_start.data_dir / "rkvstore.log"]:
        assert needle not in path.read_bytes(), f"the root secret is in {path.name}"


# --------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_with_exit_code_0(data_dir: Path, sig: signal.Signals) -> None:
    server = start_server(data_dir)
    try:
        with RpcClient(
            server.endpoint, server.access_key_id, Secret(server.access_key_secret)
        ) as client:
            assert client.call("DescribeRegions")["RegionIds"]
        server.process.send_signal(sig)
        started = time.monotonic()
        code = server.process.wait(timeout=STOP_TIMEOUT)
        assert time.monotonic() - started < STOP_TIMEOUT
        assert code == 0, f"rkvstore serve exited with {code} on {sig.name}"
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=STOP_TIMEOUT)
