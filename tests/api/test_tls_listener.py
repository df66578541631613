"""The TLS listener (docs/kms.md §1): ``RKVSTORE_TLS_CERTFILE`` and ``RKVSTORE_TLS_KEYFILE``.

A throwaway CA signs a certificate for 127.0.0.1. The official new SDK (its
``Config.ca`` is handed to requests as ``verify``, so it checks the chain and
the address against that CA) and httpx (an SSL context of the CA) reach the
server over HTTPS. RAM's ``acs:SecureTransport`` is true there, and false on a
plain-HTTP server. Bad settings stop the start with one line and no traceback.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rkvstore.client import RpcClient
from rkvstore.secret import Secret
from tests.api.ram_helpers import (
    GENEROUS_RATE,
    Principal,
    discover_account_id,
    document,
    expect_denied,
    make_user,
    ram_server,
    root_of,
    statement,
)
from tests.conftest import ARTIFACT_DIRS, HTTP_STACKS, LiveServer, free_port, start_server

OVER_TLS = {"Bool": {"acs:SecureTransport": "true"}}


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_key: Path  # belongs to no certificate here


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    path = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("rkvstore test CA", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca_cert.subject, ca_key, ca=False)
    files = {
        "ca.pem": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server.pem": cert.public_bytes(serialization.Encoding.PEM),
        "server.key": _key_pem(key),
        "other.key": _key_pem(ec.generate_private_key(ec.SECP256R1())),
    }
    for name, data in files.items():
        (path / name).write_bytes(data)
        (path / name).chmod(0o600)
    return Pki(path / "ca.pem", path / "server.pem", path / "server.key", path / "other.key")


def _tls_env(pki: Pki) -> dict[str, str]:
    return {"RKVSTORE_TLS_CERTFILE": str(pki.cert), "RKVSTORE_TLS_KEYFILE": str(pki.key)}


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("tls")
    ARTIFACT_DIRS.append(data_dir)
    env = {**GENEROUS_RATE, **_tls_env(pki), "RKVSTORE_HTTP_REQUEST_TIMEOUT_SECONDS": "2"}
    live = start_server(data_dir, extra_env=env, ca=pki.ca)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with ram_server(tmp_path_factory.mktemp("plain")) as live:
        yield live


def _ca_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca)


def test_the_new_sdk_calls_over_https(tls_server: LiveServer) -> None:
    kv = root_of(tls_server).kv()
    regions = kv.describe_regions(kv_models.DescribeRegionsRequest()).body
    assert regions.region_ids.kvstore_region


def test_httpx_calls_over_https_and_plain_http_gets_no_answer(
    tls_server: LiveServer, pki: Pki
) -> None:
    http = httpx.Client(timeout=10, verify=_ca_context(pki))
    secret = Secret(tls_server.access_key_secret)
    with RpcClient(tls_server.url, tls_server.access_key_id, secret, http=http) as client:
        assert client.request("DescribeRegions").status_code == 200
    # The port speaks TLS only; without the CA the certificate is not trusted.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{tls_server.endpoint}/", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_server.url + "/", timeout=5)
    # The server is still serving.
    assert httpx.get(tls_server.url + "/", timeout=5, verify=_ca_context(pki)).status_code


def _user_only_over_tls(server: LiveServer) -> Principal:
    root = root_of(server)
    return make_user(
        root,
        discover_account_id(root),
        documents=[document(statement("kvstore:DescribeRegions", condition=OVER_TLS))],
    )


def test_secure_transport_is_true_over_tls_and_false_over_http(
    tls_server: LiveServer, plain_server: LiveServer
) -> None:
    request = kv_models.DescribeRegionsRequest()
    user = _user_only_over_tls(tls_server)
    assert user.kv().describe_regions(request).body.region_ids.kvstore_region
    user = _user_only_over_tls(plain_server)
    expect_denied(lambda: user.kv().describe_regions(request), user, "kvstore:DescribeRegions")


def test_the_request_timeout_covers_the_handshake_and_the_request(
    tls_server: LiveServer, pki: Pki
) -> None:
    """A client that connects and never finishes the handshake, or finishes it and then
    says nothing, is closed after the request timeout (2 s on this server)."""
    import socket
    import time

    host, port = tls_server.endpoint.split(":")
    for handshake in (False, True):
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=20) as raw:
            if handshake:
                with _ca_context(pki).wrap_socket(raw, server_hostname=host) as tls:
                    assert tls.recv(1) == b""  # closed by the server
            else:
                assert raw.recv(1) == b""
        assert 1.5 < time.monotonic() - started < 10


def _serve(env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rkvstore.cli", "serve", "--port", str(free_port())]
    command += ["--data-dir", str(data_dir)]
    return subprocess.run(
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        pytest.param(
            "cert",
            "RKVSTORE_TLS_CERTFILE is set but RKVSTORE_TLS_KEYFILE is not: TLS needs both the "
            "certificate and its private key (--tls-certfile and --tls-keyfile)",
            id="certificate-only",
        ),
        pytest.param(
            "key",
            "RKVSTORE_TLS_KEYFILE is set but RKVSTORE_TLS_CERTFILE is not: TLS needs both the "
            "certificate and its private key (--tls-certfile and --tls-keyfile)",
            id="key-only",
        ),
    ],
)
def test_one_file_alone_stops_the_start(pki: Pki, tmp_path: Path, given: str, message: str) -> None:
    env = _tls_env(pki)
    env.pop("RKVSTORE_TLS_KEYFILE" if given == "cert" else "RKVSTORE_TLS_CERTFILE")
    env["RKVSTORE_TLS_CERTFILE" if given == "key" else "RKVSTORE_TLS_KEYFILE"] = ""  # unset
    done = _serve(env, tmp_path / "data")
    assert done.returncode == 1
    assert done.stderr == f"Error: {message}\n"


def test_bad_files_stop_the_start(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        serialization.load_pem_private_key(pki.key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    cases = [
        (
            {"RKVSTORE_TLS_KEYFILE": str(missing)},
            f"cannot read the TLS private key file {missing}: No such file or directory",
        ),
        (
            {"RKVSTORE_TLS_KEYFILE": str(pki.other_key)},
            f"the TLS private key file {pki.other_key} does not belong to the certificate "
            f"in {pki.cert}",
        ),
        (
            {"RKVSTORE_TLS_CERTFILE": str(garbage)},
            f"the TLS certificate file {garbage} holds no PEM certificate",
        ),
        (
            {"RKVSTORE_TLS_KEYFILE": str(garbage)},
            f"the TLS private key file {garbage} holds no PEM private key",
        ),
        (
            {"RKVSTORE_TLS_KEYFILE": str(encrypted)},
            f"the TLS private key file {encrypted} is encrypted: give the private key "
            "unencrypted (file mode 0600)",
        ),
    ]
    key_text = pki.key.read_text()
    for override, message in cases:
        done = _serve({**_tls_env(pki), **override}, tmp_path / "data")
        assert (done.returncode, done.stderr) == (1, f"Error: {message}\n")
        assert key_text not in done.stdout + done.stderr


def test_several_workers_serve_tls_on_the_other_stack(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("tls-workers")
    ARTIFACT_DIRS.append(data_dir)
    # The other HTTP stack than tls_server's default (httptools, uvloop).
    env = {**GENEROUS_RATE, **_tls_env(pki), **HTTP_STACKS["h11-asyncio"], "RKVSTORE_WORKERS": "2"}
    live = start_server(data_dir, extra_env=env, ca=pki.ca)
    try:
        kv = root_of(live).kv()
        for _ in range(4):  # whichever worker accepts
            assert kv.describe_regions(kv_models.DescribeRegionsRequest()).body.region_ids
        log = (data_dir / "rkvstore.log").read_text()
        assert f"serving on https://127.0.0.1:{live.endpoint.split(':')[1]}" in log
        assert pki.key.read_text() not in log
    finally:
        assert live.stop() == 0
