"""Live under contention and faults (issue 8), on real processes.

Every test starts its own ``rkvstore serve`` and, where it needs nodes,
redis-server processes of its own (``own_lone_redis``); a node that misbehaves
is a real one behind ``tests.trickle.TrickleProxy``, whose replies come back
one byte every ``TRICKLE`` seconds: each read gets a byte well within any
per-read timeout, the whole reply never arrives.

- a node exchange is bounded as a whole: discovery and a change through a
  trickling node answer within ``NODE_TIMEOUT`` plus slack;
- fair shares: one tenant's requests stuck on such a node do not delay another
  tenant's;
- HTTP connections are bounded: in time until a complete request, in number,
  also under a low file-descriptor limit; a body cut short and a request that
  is not HTTP each get one access-log line, no traceback.

Only upper bounds on time are asserted; the times measured are printed (``-rP``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from rkvstore.api.http_guard import FD_RESERVE
from rkvstore.client import RpcClient
from rkvstore.secret import Secret
from tests.api.ram_helpers import create_tenant
from tests.conftest import ARTIFACT_DIRS, HTTP_STACKS, LiveServer, start_server
from tests.integration.test_resilience import (
    SERVICE_UNAVAILABLE_MESSAGE,
    api,
    api_error,
    auth_ok,
    kill_strays,
    log_text,
    new_password,
    own_lone_redis,
    register,
    reset,
    serving,
    stop_server,
    wait_for,
)
from tests.trickle import TrickleProxy

NODE_TIMEOUT: Final = 2.0  # RKVSTORE_NODE_TIMEOUT_SECONDS of every server here
TRICKLE: Final = 1.5  # seconds between two bytes of a trickled reply: under NODE_TIMEOUT
SLACK: Final = 3.0
TENANT_WORKERS: Final = 8  # RKVSTORE_TENANT_WORKERS, the default
PROMPT: Final = 0.5  # seconds: a new client's DescribeRegions, however many connections are open
REQUEST_TIMEOUT: Final = 2.0  # RKVSTORE_HTTP_REQUEST_TIMEOUT_SECONDS where connections are tested
NODES_ENV: Final = {"RKVSTORE_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT)}
UNREACHABLE: Final = (
    400,
    "InvalidEndpoint.Unreachable",
    "Redis node {node} cannot be reached, or did not answer as Redis in time: check its host "
    "and port, that it runs, and that it accepts connections from rkvstore's host.",
)
NOT_HTTP: Final = (400, "InvalidHttpRequest", "The request line or a header is not valid HTTP/1.1.")


@pytest.fixture
def own_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("own-redis")
    ARTIFACT_DIRS.append(path)
    return path


# --------------------------------------------------------------------------- helpers


def stderr_text(server: LiveServer) -> str:
    path = server.data_dir / "server.out"
    return path.read_text(errors="replace") if path.exists() else ""


def server_output(server: LiveServer) -> str:
    """Everything the server wrote: its log file and its stdout/stderr."""
    return log_text(server) + stderr_text(server)


def log_size(server: LiveServer) -> int:
    paths = [server.data_dir / "rkvstore.log", server.data_dir / "server.out"]
    return sum(p.stat().st_size for p in paths if p.exists())


def access_lines(text: str, **fields: str) -> list[str]:
    """The access-log lines of ``text`` with every ``key=value`` of ``fields``."""
    wanted = [f" {key}={value} " for key, value in fields.items()]
    return [
        line
        for line in text.splitlines()
        if " request_id=" in line and all(w in line + " " for w in wanted)
    ]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def register_params(endpoint: str, password: str) -> dict[str, Any]:
    return {"Endpoint": endpoint, "AdminUserName": "admin", "AdminPassword": password}


def raw_socket(server: LiveServer, timeout: float = 5.0) -> socket.socket:
    host, port = server.endpoint.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_to_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the server closes (bounded)."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
    raise AssertionError(f"the server did not close within {timeout} s")


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def wait_closed(socks: list[socket.socket], since: float, timeout: float) -> list[float]:
    """Wait until the server has closed every socket, at most until ``since + timeout``
    (``time.monotonic()`` seconds); when each was seen closed, in seconds after ``since``.

    Closed: a read gives EOF (or a reset). A socket that gets anything else
    (a response) fails the wait.
    """
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = since + timeout
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"a socket the server should close got {data[:200]!r}"
                closed[sock] = time.monotonic() - since
                selector.unregister(sock)
    open_left = len(socks) - len(closed)
    assert not open_left, f"{open_left} of {len(socks)} socket(s) still open after {timeout} s"
    return sorted(closed.values())


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """A list of sockets a test opens; every one closed afterwards."""
    made: list[socket.socket] = []
    try:
        yield made
    finally:
        for sock in made:
            sock.close()


def traceback_excerpt(text: str) -> str:
    """How many tracebacks ``text`` holds, and the first with what came before it."""
    first = text.index("Traceback")
    excerpt = text[max(0, first - 400) :][:2000]
    return f"{text.count('Traceback')} traceback(s); the first:\n{excerpt}"


def no_traceback(server: LiveServer) -> None:
    text = server_output(server)
    assert "Traceback" not in text, traceback_excerpt(text)


# --------------------------------------------------------------------------- a. discovery


def test_register_through_a_trickling_node_answers_within_the_deadline(
    data_dir: Path, own_root: Path
) -> None:
    with (
        own_lone_redis(own_root / "lone") as (lone, password),
        TrickleProxy(lone.port, interval=TRICKLE, mode="trickle") as proxy,
        serving(data_dir, NODES_ENV) as server,
        api(server) as client,
    ):
        params = register_params(proxy.endpoint, password)
        took, err = timed(lambda: api_error(client, "RegisterInstance", params))
        print(f"RegisterInstance through a trickling node answered after {took:.2f} s")
        status, code, message = UNREACHABLE
        assert (err.status, err.code, err.message) == (
            status,
            code,
            message.format(node=proxy.endpoint),
        )
        assert took < NODE_TIMEOUT + SLACK
        assert proxy.trickled >= 1  # the node did answer, one byte at a time
        assert client.call("DescribeInstances", {})["TotalCount"] == 0
        no_traceback(server)


# --------------------------------------------------------------------------- b. a change


@pytest.mark.slow
def test_a_change_through_a_trickling_node_is_unavailable_then_works_again(
    data_dir: Path, own_root: Path
) -> None:
    with (
        own_lone_redis(own_root / "lone") as (lone, password),
        TrickleProxy(lone.port, interval=TRICKLE) as proxy,
        serving(data_dir, NODES_ENV) as server,
        api(server) as client,
    ):
        body = register(client, proxy.endpoint, password)
        assert (body["ConnectionDomain"], body["Port"]) == ("127.0.0.1", proxy.port)
        instance_id = body["InstanceId"]
        first = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": first},
        )
        assert auth_ok(lone.port, "demo", first)

        proxy.set_mode("trickle")
        second = new_password()
        params = {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": second}
        took, err = timed(lambda: api_error(client, "ResetAccountPassword", params))
        print(f"ResetAccountPassword through a trickling node answered after {took:.2f} s")
        assert (err.status, err.code, err.message) == (
            503,
            "ServiceUnavailable",
            SERVICE_UNAVAILABLE_MESSAGE,
        )
        assert took < NODE_TIMEOUT + SLACK

        proxy.set_mode("pass")
        third = new_password()
        took, _ = timed(lambda: reset(client, instance_id, "demo", third))
        print(f"ResetAccountPassword once the node answers again: {took:.2f} s")
        assert auth_ok(lone.port, "demo", third)
        assert not auth_ok(lone.port, "demo", first)
        assert not auth_ok(lone.port, "demo", second)
        no_traceback(server)


@pytest.mark.slow
def test_a_change_queued_behind_a_pass_on_a_trickling_node_answers_within_the_deadline(
    data_dir: Path, own_root: Path
) -> None:
    """The reconciler meets the trickling node first and holds the instance's slot; a
    change that comes just then waits for it: the pass ends at its own deadline (one
    node timeout for all its node work), then the change's own runs out. Two node
    timeouts in all, as the README says, never more."""
    env = {
        **NODES_ENV,
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "1",
        "RKVSTORE_VERIFY_INTERVAL_SECONDS": "1",
    }
    with (
        own_lone_redis(own_root / "lone") as (lone, password),
        TrickleProxy(lone.port, interval=TRICKLE) as proxy,
        serving(data_dir, env) as server,
        api(server) as client,
    ):
        instance_id = register(client, proxy.endpoint, password)["InstanceId"]
        first = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": first},
        )
        proxy.set_mode("trickle")
        before = proxy.accepted
        wait_for("a reconciler pass on the node", lambda: proxy.accepted > before, 5, 0.01)
        params = {
            "InstanceId": instance_id,
            "AccountName": "demo",
            "AccountPassword": new_password(),
        }
        try:
            took, err = timed(lambda: api_error(client, "ResetAccountPassword", params))
        finally:
            proxy.set_mode("pass")  # what is left of the test does not wait for the node
        print(f"ResetAccountPassword behind a pass on a trickling node answered after {took:.2f} s")
        assert (err.status, err.code, err.message) == (
            503,
            "ServiceUnavailable",
            SERVICE_UNAVAILABLE_MESSAGE,
        )
        assert took < 2 * NODE_TIMEOUT + SLACK, f"{took:.2f} s"


# --------------------------------------------------------------------------- c. fair shares


@pytest.mark.slow
def test_one_tenant_stuck_on_a_trickling_node_does_not_delay_another(
    data_dir: Path, own_root: Path
) -> None:
    stuck = 40
    with (
        own_lone_redis(own_root / "slow") as (slow, slow_password),
        own_lone_redis(own_root / "healthy") as (healthy, healthy_password),
        TrickleProxy(slow.port, interval=TRICKLE, mode="trickle") as proxy,
        serving(data_dir, NODES_ENV) as server,
        api(server) as tenant_a,
    ):
        b = create_tenant(server)
        with (
            RpcClient(server.endpoint, b.access_key_id, Secret(b.access_key_secret)) as tenant_b,
            ThreadPoolExecutor(stuck) as pool,
        ):
            b_instance = register(tenant_b, f"127.0.0.1:{healthy.port}", healthy_password)[
                "InstanceId"
            ]
            flood = register_params(proxy.endpoint, slow_password)
            fired = time.monotonic()
            futures: list[Future[httpx.Response]] = [
                pool.submit(tenant_a.request, "RegisterInstance", flood) for _ in range(stuck)
            ]
            # A's share of workers is on the node, waiting for its bytes.
            wait_for(
                "A's share on the node",
                lambda: proxy.open_connections >= TENANT_WORKERS,
                5,
                0.01,
            )

            b_first, b_second = new_password(), new_password()
            b_calls: dict[str, Callable[[], Any]] = {
                "DescribeRegions": lambda: tenant_b.call("DescribeRegions", {}),
                "DescribeInstances": lambda: tenant_b.call("DescribeInstances", {}),
                "CreateAccount": lambda: tenant_b.call(
                    "CreateAccount",
                    {
                        "InstanceId": b_instance,
                        "AccountName": "demo",
                        "AccountPassword": b_first,
                    },
                ),
                "ResetAccountPassword": lambda: reset(tenant_b, b_instance, "demo", b_second),
                "DescribeInstances again": lambda: tenant_b.call("DescribeInstances", {}),
            }
            b_times = {}
            for name, call in b_calls.items():
                b_times[name], _ = timed(call)
            in_flight = sum(not f.done() for f in futures)
            print(
                f"B, while {in_flight} of A's {stuck} requests were in flight: "
                + ", ".join(f"{name} {t:.3f} s" for name, t in b_times.items())
            )
            assert in_flight > 0, "A's requests were all answered before B's: nothing shown"
            assert all(t < 1.0 for t in b_times.values()), b_times
            assert auth_ok(healthy.port, "demo", b_second)

            most_on_node = proxy.open_connections
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(f.done() for f in futures):
                most_on_node = max(most_on_node, proxy.open_connections)
                time.sleep(0.01)
            done, not_done = wait_futures(futures, timeout=0)
            took = time.monotonic() - fired
            assert not not_done, f"{len(not_done)} of A's requests unanswered after 60 s"
            answers = Counter(
                (r.status_code, json.loads(r.content).get("Code"))
                for r in (f.result() for f in done)
            )
            print(f"A's {stuck} requests all answered after {took:.2f} s: {dict(answers)}")
            print(f"at most {most_on_node} of A's requests on the node at once")
            # Its share (RKVSTORE_TENANT_WORKERS); the proxy sees a connection end a
            # moment after the request that made it.
            assert most_on_node <= TENANT_WORKERS + 2, most_on_node
            assert all(status != 500 for status, _ in answers), answers
            assert answers == {UNREACHABLE[:2]: stuck}, answers
        assert tenant_a.call("DescribeInstances", {})["TotalCount"] == 0
        no_traceback(server)


# --------------------------------------------------------------------------- d. connections


def idle_connection(server: LiveServer, made: list[socket.socket]) -> None:
    made.append(raw_socket(server))


def half_headers(server: LiveServer, made: list[socket.socket]) -> None:
    sock = raw_socket(server)
    made.append(sock)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: " + server.endpoint.encode() + b"\r\nContent-Ty")


def body_never_comes(server: LiveServer, made: list[socket.socket]) -> None:
    sock = raw_socket(server)
    made.append(sock)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: "
        + server.endpoint.encode()
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + b"Content-Length: 100\r\n\r\nAction=Des"
    )


def served_promptly(server: LiveServer, bound: float | None = PROMPT) -> float:
    """A new client's signed request answers 200 (within ``bound`` seconds); how long it took."""
    with api(server) as client:
        took, response = timed(lambda: client.request("DescribeRegions", {}))
    assert response.status_code == 200, response.text
    assert bound is None or took < bound, f"DescribeRegions took {took:.2f} s"
    return took


@pytest.fixture(params=sorted(HTTP_STACKS))
def stack(request: pytest.FixtureRequest) -> dict[str, str]:
    """The server's HTTP stack: the connection guard holds on each."""
    return HTTP_STACKS[request.param]


@pytest.mark.slow
def test_connections_over_the_cap_and_half_sent_requests(
    data_dir: Path, stack: dict[str, str]
) -> None:
    cap = 32
    env = {
        **stack,
        "RKVSTORE_MAX_CONNECTIONS": str(cap),
        "RKVSTORE_HTTP_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT),
    }
    with serving(data_dir, env) as server, sockets() as made:
        mark = len(server_output(server))
        opened = time.monotonic()
        for _ in range(40):
            idle_connection(server, made)
        for _ in range(20):
            half_headers(server, made)
        for _ in range(20):
            body_never_comes(server, made)
        took = served_promptly(server)
        print(f"{len(made)} idle or half-sent connections; a new client served in {took:.3f} s")
        closed = wait_closed(made, opened, REQUEST_TIMEOUT + SLACK)
        evicted = sum(t < REQUEST_TIMEOUT / 2 for t in closed)
        print(
            f"every one closed by the server: {evicted} at once (over the cap), "
            f"the rest by {closed[-1]:.2f} s after the first opened"
        )
        # A connection that keeps sending, too slowly, is closed all the same.
        with sockets() as slow:
            slowloris = raw_socket(server)
            slow.append(slowloris)
            started = time.monotonic()
            request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
            sent = 0
            with contextlib.suppress(OSError):
                while sent < len(request) and time.monotonic() - started < REQUEST_TIMEOUT + SLACK:
                    slowloris.sendall(request[sent : sent + 1])
                    sent += 1
                    time.sleep(0.1)
            wait_closed(slow, started, REQUEST_TIMEOUT + SLACK)
            print(f"a trickling client closed after {time.monotonic() - started:.2f} s")
        served_promptly(server)
        time.sleep(0.5)  # what the closing logged is there
        text = server_output(server)[mark:]
        about_cap = [line for line in text.splitlines() if f"cap {cap}" in line]
        print("\n".join(about_cap))
        assert about_cap, "the log never says the cap was reached"
        assert len(about_cap) < 10, about_cap[:20]
        no_traceback(server)


@pytest.mark.slow
def test_every_connection_busy_a_new_one_gets_service_unavailable(
    data_dir: Path, own_root: Path, stack: dict[str, str]
) -> None:
    cap = 16  # the least RKVSTORE_MAX_CONNECTIONS takes
    env = {**stack, **NODES_ENV, "RKVSTORE_MAX_CONNECTIONS": str(cap)}
    with (
        own_lone_redis(own_root / "lone") as (lone, password),
        TrickleProxy(lone.port, interval=TRICKLE, mode="trickle") as proxy,
        serving(data_dir, env) as server,
        api(server) as client,
        ThreadPoolExecutor(cap) as pool,
    ):
        log_mark = len(log_text(server))
        params = register_params(proxy.endpoint, password)
        # Each holds its connection for seconds: answered, or waiting for its tenant's share.
        futures = [pool.submit(client.request, "RegisterInstance", params) for _ in range(cap)]
        wait_for("requests on the node", lambda: proxy.open_connections >= TENANT_WORKERS, 5, 0.01)
        time.sleep(0.2)  # every one of them sent in full
        with sockets() as made:
            sock = raw_socket(server)
            made.append(sock)
            status, headers, body = parse_response(read_to_eof(sock))
        answer = json.loads(body)
        assert (status, answer["Code"], answer["Message"]) == (
            503,
            "ServiceUnavailable",
            SERVICE_UNAVAILABLE_MESSAGE,
        )
        assert headers["content-type"].startswith("application/json"), headers
        in_flight = sum(not f.done() for f in futures)
        print(f"refused with 503 while {in_flight} of {cap} requests were in flight")
        done, not_done = wait_futures(futures, timeout=60)
        assert not not_done
        answers = Counter(
            (r.status_code, json.loads(r.content).get("Code")) for r in (f.result() for f in done)
        )
        assert answers == {UNREACHABLE[:2]: cap}, answers  # none of them cut off
        served_promptly(server)
        text = log_text(server)[log_mark:]
        assert len(access_lines(text, status="503", code="ServiceUnavailable")) == 1, text
        refusals = [line for line in text.splitlines() if "refusing new ones" in line]
        assert len(refusals) == 1, refusals
        no_traceback(server)


# The server's file-descriptor limit and the connections opened against it.
FD_LIMIT: Final = 1024
BURST: Final = 1100


@contextlib.contextmanager
def fd_limited_server(data_dir: Path, stack: dict[str, str]) -> Iterator[LiveServer]:
    """A server whose file-descriptor limit is ``FD_LIMIT``, soft and hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = BURST + 256  # this process opens the burst's sockets
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    env = {
        **stack,
        **NODES_ENV,
        "RKVSTORE_MAX_CONNECTIONS": str(BURST),
        "RKVSTORE_HTTP_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT),
    }
    server = start_server(data_dir, extra_env=env, nofile=FD_LIMIT)
    try:
        cap = FD_LIMIT - FD_RESERVE
        said = f"at most {cap} client connections: the file-descriptor limit is {FD_LIMIT}"
        assert said in log_text(server)
        yield server
    finally:
        stop_server(server)
        kill_strays(data_dir)


@contextlib.contextmanager
def paused(server: LiveServer) -> Iterator[None]:
    """The server's process stopped (SIGSTOP) while the block runs, a moment only:
    what arrives meanwhile meets it all at once, as after a pause of its event loop."""
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


def burst(server: LiveServer, made: list[socket.socket], count: int) -> None:
    """``count`` connections begun at once; none waits for the server to accept it."""
    host, port = server.endpoint.rsplit(":", 1)
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        made.append(sock)
        sock.setblocking(False)
        err = sock.connect_ex((host, int(port)))
        assert err in (0, errno.EINPROGRESS), os.strerror(err)


@pytest.mark.slow
def test_a_low_file_descriptor_limit_and_more_connections_than_it_allows(
    data_dir: Path, stack: dict[str, str]
) -> None:
    with fd_limited_server(data_dir, stack) as server:
        log_mark, size = len(log_text(server)), log_size(server)
        with sockets() as made:
            with paused(server):
                burst(server, made, BURST)
            opened = time.monotonic()
            took = served_promptly(server, bound=None)  # checked last, with the log's word
            print(f"{BURST} connections at once; a new client served in {took:.3f} s")
            closed = wait_closed(made, opened, REQUEST_TIMEOUT + SLACK)
            print(f"every one closed by the server, the last {closed[-1]:.2f} s after")
        served_promptly(server)
        grown = log_size(server) - size
        print(f"the log grew by {grown} bytes")
        assert grown < 64 * 1024
        no_traceback(server)
        # The cap is there to keep the server within its file descriptors.
        out_of_files = [
            line for line in log_text(server)[log_mark:].splitlines() if "open files" in line
        ]
        assert took < PROMPT and not out_of_files, (
            f"a new client waited {took:.2f} s; the server logged {out_of_files}"
        )


@pytest.mark.slow
def test_a_stop_just_after_a_connection_burst_logs_no_flood(
    data_dir: Path, own_root: Path, stack: dict[str, str]
) -> None:
    """SIGTERM while a request is in flight and a burst of connections has just come:
    the request is answered, the server exits, and its log stays small."""
    with (
        own_lone_redis(own_root / "lone") as (lone, password),
        TrickleProxy(lone.port, interval=TRICKLE, mode="trickle") as proxy,
        fd_limited_server(data_dir, stack) as server,
        api(server) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        size = log_size(server)
        params = register_params(proxy.endpoint, password)
        in_flight = pool.submit(client.request, "RegisterInstance", params)
        # On the node: it holds the server's shutdown for most of NODE_TIMEOUT yet.
        wait_for("the request on the node", lambda: proxy.accepted >= 1, 5, 0.01)
        with sockets() as made:
            with paused(server):
                burst(server, made, BURST)
            time.sleep(0.1)  # the server meets the burst
            stopped = time.monotonic()
            assert server.stop() == 0
            stop_took = time.monotonic() - stopped
        response = in_flight.result(timeout=30)
        answer = json.loads(response.content)
        assert (response.status_code, answer["Code"]) == UNREACHABLE[:2]
        grown = log_size(server) - size
        text = server_output(server)
        out_of_files = text.count("Too many open files")
        print(
            f"stopped after {stop_took:.2f} s; the server ran out of files {out_of_files} time(s)"
        )
        print(f"the log grew by {grown} bytes; {text.count('Traceback')} tracebacks")
        assert "Traceback" not in text, traceback_excerpt(text)
        assert grown < 64 * 1024


# --------------------------------------------------------------------------- e. not a whole request


@pytest.fixture(scope="module", params=sorted(HTTP_STACKS))
def plain_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("liveness")
    ARTIFACT_DIRS.append(path)
    server = start_server(path, extra_env=HTTP_STACKS[request.param])
    try:
        yield server
    finally:
        stop_server(server)


def test_a_body_cut_short_is_one_access_log_line(plain_server: LiveServer) -> None:
    log_mark, out_mark = len(log_text(plain_server)), len(stderr_text(plain_server))
    with sockets() as made:
        sock = raw_socket(plain_server)
        made.append(sock)
        sock.sendall(
            b"POST /?Action=DescribeRegions HTTP/1.1\r\nHost: "
            + plain_server.endpoint.encode()
            + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: 1000\r\n\r\n"
            + b"a=01234567"
        )
        time.sleep(0.2)  # the server has the headers and is reading the body
    wait_for(
        "an access-log line for the cut request",
        lambda: access_lines(log_text(plain_server)[log_mark:], status="499"),
        5,
    )
    time.sleep(0.5)  # and no second one
    log, out = log_text(plain_server)[log_mark:], stderr_text(plain_server)[out_mark:]
    print(log)
    # The log file and stderr each get the access-log line, once.
    for text in (log, out):
        cut = access_lines(text)
        assert len(cut) == 1, text
        assert " status=499 code=ClientDisconnect " in cut[0], cut
        assert "Traceback" not in text, text
        assert "Exception" not in text, text


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
    ],
    ids=["request-line", "header", "tls-hello"],
)
def test_a_request_that_is_not_http_gets_the_json_error(
    plain_server: LiveServer, garbage: bytes
) -> None:
    mark = len(log_text(plain_server))
    with sockets() as made:
        sock = raw_socket(plain_server)
        made.append(sock)
        sock.sendall(garbage)
        status, headers, body = parse_response(read_to_eof(sock))
    answer = json.loads(body)
    assert (status, answer["Code"], answer["Message"]) == NOT_HTTP
    assert headers["content-type"].startswith("application/json"), headers
    assert headers.get("connection") == "close", headers
    assert answer["RequestId"], answer
    time.sleep(0.3)
    text = log_text(plain_server)[mark:]
    lines = access_lines(text, status="400", code="InvalidHttpRequest")
    assert len(lines) == 1, text
    assert f"request_id={answer['RequestId']}" in lines[0]
    assert "Invalid HTTP request received" not in text
    assert "Traceback" not in text
