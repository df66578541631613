"""Security review: an address a node or a Sentinel names is checked before any login goes there.

A replica's ``master_host`` and the master a Sentinel names are only what those
processes were told: rkvstore connects to neither (nor sends it the admin or
the management login) unless it lies inside RKVSTORE_REGISTER_NETWORKS. Here
the networks are ``127.0.0.1/32`` and the outside address is ``127.0.0.2``
(loopback on Linux, yet outside), where a listener records what arrives and
refuses every login as a Redis would.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.addresses import OutsideNetworks, allowed_address, parse_networks
from tests.conftest import remember_secret
from tests.integration.test_register_nodes import bare_redis
from tests.integration.test_register_sentinel import NAME, sentinel_says, sentinels
from tests.integration.test_resilience import (
    FAST,
    SYSTEM_REDIS,
    api,
    api_error,
    log_text,
    new_password,
    serving,
)
from tests.integration.test_security import NOT_ALLOWED

pytestmark = pytest.mark.skipif(not SYSTEM_REDIS.exists(), reason=f"no {SYSTEM_REDIS}")

OUTSIDE = "127.0.0.2"
ENV = {**FAST, "RKVSTORE_REGISTER_NETWORKS": "127.0.0.1/32"}


class _Recorder(socketserver.BaseRequestHandler):
    """Keeps what a connection sends; answers each read as a Redis refusing the login."""

    server: _Listener

    def handle(self) -> None:
        self.request.settimeout(2)
        for _ in range(8):  # bounded: a few exchanges per connection
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.server.lock:
                self.server.received.extend(data)
            with contextlib.suppress(OSError):
                self.request.sendall(b"-WRONGPASS invalid username-password pair\r\n")


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((OUTSIDE, 0), _Recorder)
        self.lock = threading.Lock()
        self.received = bytearray()

    def got(self, secret: str) -> bool:
        with self.lock:
            return secret.encode() in self.received


@contextlib.contextmanager
def outside_listener() -> Iterator[_Listener]:
    try:
        listener = _Listener()
    except OSError as exc:  # no 127.0.0.2 on this host's loopback
        pytest.skip(f"cannot listen on {OUTSIDE}: {exc}")
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        listener.shutdown()
        listener.server_close()
        thread.join(10)


def test_a_replica_whose_master_is_outside_is_refused_before_its_master_is_reached(
    data_dir: Path, tmp_path: Path
) -> None:
    admin = remember_secret("Adm!" + secrets.token_hex(12))
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(outside_listener())
        port = listener.server_address[1]
        # No masterauth: the replica's own connections to its master carry no password.
        options = ["--requirepass", admin, "--replicaof", OUTSIDE, str(port)]
        replica = stack.enter_context(bare_redis(tmp_path, "replica", options, admin))
        server = stack.enter_context(serving(data_dir, ENV))
        client = stack.enter_context(api(server))
        err = api_error(
            client,
            "RegisterInstance",
            {"Endpoint": replica.endpoint, "AdminUserName": "default", "AdminPassword": admin},
        )
        assert (err.status, err.code, err.message) == NOT_ALLOWED
        assert not listener.got(admin)


@pytest.mark.slow
def test_a_sentinel_naming_a_master_outside_is_not_followed(data_dir: Path, tmp_path: Path) -> None:
    admin = remember_secret("Adm!" + secrets.token_hex(12))
    root = tmp_path / "nodes"
    root.mkdir()
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(outside_listener())
        options = ["--requirepass", admin, "--masterauth", admin]
        master = stack.enter_context(bare_redis(root, "master", options, admin))
        ports = stack.enter_context(sentinels(tmp_path, master, admin))
        server = stack.enter_context(serving(data_dir, ENV))
        client = stack.enter_context(api(server))
        params = {
            "SentinelEndpoints": ",".join(f"127.0.0.1:{p}" for p in ports),
            "SentinelMasterName": NAME,
            "AdminUserName": "default",
            "AdminPassword": admin,
        }
        instance_id = client.call("RegisterInstance", params)["InstanceId"]

        # The Sentinels now name a master outside (told so, or lied to).
        for port in ports:
            sentinel_says(port, "REMOVE", NAME)
            sentinel_says(port, "MONITOR", NAME, OUTSIDE, str(listener.server_address[1]), "2")
        err = api_error(client, "RegisterInstance", params)
        assert (err.status, err.code, err.message) == NOT_ALLOWED

        # A change looks at the Sentinels first: it goes to the recorded nodes only.
        account = {"InstanceId": instance_id, "AccountName": "app"}
        client.call("CreateAccount", {**account, "AccountPassword": new_password()})
        body = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
        item = body["Instances"]["DBInstanceAttribute"][0]
        assert (item["ConnectionDomain"], item["Port"]) == ("127.0.0.1", master.port)
        assert not listener.got(admin)
        assert not listener.got(MANAGEMENT_USER)
        text = log_text(server)
        assert (
            f"Sentinels not followed: master {OUTSIDE}:{listener.server_address[1]} "
            "outside RKVSTORE_REGISTER_NETWORKS"
        ) in text
        assert admin not in text
        client.call("DeleteInstance", {"InstanceId": instance_id})


def test_loopback_alias_is_outside() -> None:
    """The premise of this module: 127.0.0.2 is reachable here yet not 127.0.0.1/32."""
    networks = parse_networks("127.0.0.1/32")
    assert allowed_address("127.0.0.1", 1, networks) == "127.0.0.1"
    with pytest.raises(OutsideNetworks):
        allowed_address(OUTSIDE, 1, networks)
    with socket.socket() as sock:
        sock.bind((OUTSIDE, 0))
