"""Security review: a client key RegisterInstance cannot use is a 400, never a prompt or a 500.

An encrypted ``TlsClientKey`` once made OpenSSL ask for its passphrase on the
terminal (a server started from one hung there) or fail as a 500. The key is
checked when the TLS settings are, before any node is reached: the endpoint
here is a closed port.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from rkvstore.client import RpcClient, RpcError
from tests.api.instances import rpc_client
from tests.conftest import LiveServer, free_port
from tests.tls_certs import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[RpcClient]:
    with rpc_client(live_server) as own:
        yield own


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _register(client: RpcClient, files: TlsFiles, key: str) -> tuple[int, str, str]:
    params = {
        "Endpoint": f"127.0.0.1:{free_port()}",
        "AdminUserName": "default",
        "AdminPassword": "Adm!" + "x" * 12,
        "TlsCaCertificate": files.text(files.ca),
        "TlsClientCertificate": files.text(files.client_cert),
        "TlsClientKey": key,
    }
    with pytest.raises(RpcError) as caught:
        client.call("RegisterInstance", params)
    return caught.value.status, caught.value.code, caught.value.message


def test_an_encrypted_client_key_is_refused(client: RpcClient, files: TlsFiles) -> None:
    key = serialization.load_pem_private_key(files.client_key.read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase"),
    ).decode()
    assert _register(client, files, encrypted) == (
        400,
        "InvalidParameter.Tls",
        'The specified parameter "TlsClientKey" is not valid: the key is encrypted: give it '
        "without a passphrase.",
    )


def test_a_key_that_is_not_the_certificate_s_is_refused(client: RpcClient, files: TlsFiles) -> None:
    not_a_pair = (
        400,
        "InvalidParameter.Tls",
        'The specified parameter "TlsClientKey" is not valid: the certificate and key are '
        "not a PEM pair.",
    )
    assert _register(client, files, files.text(files.server_key)) == not_a_pair
    assert _register(client, files, "-----BEGIN PRIVATE KEY-----\nAAAA\n") == not_a_pair
