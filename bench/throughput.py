"""Throughput at 1, 8 and 32 concurrent clients: rkvstore beside the floor and moto, one run.

    pip install -e '.[bench]'
    python bench/throughput.py [--clients 1,8,32] [--seconds 3] [--repeat 3] [--databases sqlite]
                               [--workers 1,2,4]

Starts ``rkvstore serve`` (per database in ``--databases``; throttling OFF:
``RKVSTORE_RATE_LIMIT_PER_SECOND=0``, since one AccessKey here sends far more
than the default 50 calls a second; the periodic reconciler slowed to hourly),
creates 8 STAND_ALONE instances with an account ``bench`` each, and starts
two ``moto_server`` processes (moto's mock of AWS, ElastiCache among it): one
takes ``CreateUser``, the other holds as many users as DescribeAccounts shows
and answers ``DescribeUsers``. Then, for every client count and repetition,
six sides run in interleaved blocks of ``--seconds`` (their order rotating),
each with that many threads, each thread with its own keep-alive connection,
calling back to back:

- rkvstore reset: signed ResetAccountPassword, spread over the 8 instances;
- floor: raw redis-py ``ACL SETUSER … #<sha256>`` + ``ACL SAVE`` on the same
  8 nodes (what a reset must at least cost);
- null server reset: the same signed ResetAccountPassword calls, same
  client, to ``bench/_null_app.py`` (answers 200 without any work): its rate
  ÷ moto's is the most any server could show here against moto with these
  clients on this machine;
- moto CreateUser: ElastiCache ``CreateUser`` through boto3, a new user id each;
- rkvstore DescribeAccounts: signed, spread over the 8 instances;
- moto DescribeUsers: ElastiCache ``DescribeUsers`` through boto3.

Printed per client count and side: successful calls per second (median and
min-max over the repetitions), p50/p99 latency, the error codes seen, the
server's CPU per call (rkvstore's or moto's process; for the floor, the
redis-server nodes'), this benchmark process's CPU per call (the clients:
signing, HTTP, boto3), rkvstore's SQL per call; then the ratios rkvstore ÷
moto and rkvstore ÷ floor, per repetition, median and min-max.

``--workers 1,2,4`` starts one rkvstore per count (``RKVSTORE_WORKERS``, each
with its own database and instances) and runs the rkvstore sides of each in
the same rotation, adding the ratios N workers ÷ the first count: what more
processes give, measured side by side. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from _common import (
    Block,
    NullServer,
    Server,
    Sql,
    answer_code,
    common_arguments,
    database_kinds,
    database_url,
    drive,
    median,
    percentile,
    pg_reachable,
    print_end,
    print_start,
    process_cpu,
    rotations,
    server_env,
    spread,
    start_null_server,
    start_server,
    wait_normal,
)
from _moto import Moto, moto_code, start_moto
from sqlalchemy import create_engine, select

from rkvstore.client import RpcClient
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.store.tables import instances

INSTANCES = 8
QUIET = {
    "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "3600",
    "RKVSTORE_VERIFY_INTERVAL_SECONDS": "3600",
}


def _password() -> str:
    return "Bench_" + secrets.token_hex(8) + "x"


# --------------------------------------------------------------------------- the sides


@dataclass
class Side:
    name: str
    open_worker: Callable[[int], Any]
    call: Callable[[Any, int], str]
    close_worker: Callable[[Any], None]
    cpu: Callable[[], float] | None
    sql: Callable[[], Sql] | None = None


@dataclass
class Results:
    blocks: dict[tuple[str, int], list[Block]] = field(default_factory=dict)
    sql: dict[tuple[str, int], Sql] = field(default_factory=dict)


def rkvstore_sides(server: Server, targets: list[str], suffix: str = "") -> list[Side]:
    def open_client(_index: int) -> RpcClient:
        client = server.client()
        client.call("DescribeRegions")  # connected before the block starts
        return client

    def reset(client: RpcClient, n: int, index: int) -> str:
        iid = targets[(index + n) % len(targets)]
        params = {"InstanceId": iid, "AccountName": "bench", "AccountPassword": _password()}
        return answer_code(client.request("ResetAccountPassword", params))

    def describe(client: RpcClient, n: int, index: int) -> str:
        iid = targets[(index + n) % len(targets)]
        return answer_code(client.request("DescribeAccounts", {"InstanceId": iid}))

    def with_index(fn: Callable[[RpcClient, int, int], str]) -> Callable[[Any, int], str]:
        return lambda worker, n: fn(worker[1], n, worker[0])

    return [
        Side(
            "rkvstore reset" + suffix,
            lambda i: (i, open_client(i)),
            with_index(reset),
            lambda w: w[1].close(),
            server.cpu,
            server.sql,
        ),
        Side(
            "rkvstore DescribeAccounts" + suffix,
            lambda i: (i, open_client(i)),
            with_index(describe),
            lambda w: w[1].close(),
            server.cpu,
            server.sql,
        ),
    ]


def null_side(null: NullServer, targets: list[str]) -> Side:
    """Signed resets, same client, to a server that does nothing (bench/_null_app.py)."""

    def open_client(index: int) -> tuple[int, RpcClient]:
        client = null.client()
        client.request("DescribeRegions")  # connected before the block starts
        return index, client

    def call(worker: tuple[int, RpcClient], n: int) -> str:
        index, client = worker
        iid = targets[(index + n) % len(targets)]
        params = {"InstanceId": iid, "AccountName": "bench", "AccountPassword": _password()}
        return answer_code(client.request("ResetAccountPassword", params))

    return Side("null server reset", open_client, call, lambda w: w[1].close(), null.cpu)


def floor_side(ports: list[int], passwords: list[str], redis_pids: list[int]) -> Side:
    def open_nodes(index: int) -> tuple[int, list[redis.Redis]]:
        nodes = [
            redis.Redis(port=p, username=MANAGEMENT_USER, password=pw)
            for p, pw in zip(ports, passwords, strict=True)
        ]
        for node in nodes:
            node.ping()
        return index, nodes

    def call(worker: tuple[int, list[redis.Redis]], n: int) -> str:
        index, nodes = worker
        node = nodes[(index + n) % len(nodes)]
        digest = hashlib.sha256(_password().encode()).hexdigest()
        node.execute_command(
            "ACL", "SETUSER", "bench_floor", "reset", "on", f"#{digest}", "~*", "+@all"
        )
        node.execute_command("ACL", "SAVE")
        return "OK"

    def close(worker: tuple[int, list[redis.Redis]]) -> None:
        for node in worker[1]:
            node.close()

    return Side(
        "floor SETUSER+SAVE",
        open_nodes,
        call,
        close,
        lambda: sum(process_cpu(pid, exclude=()) for pid in redis_pids),
    )


def moto_sides(create: Moto, describe: Moto, max_clients: int) -> list[Side]:
    # boto3 clients are slow to make: one per thread, made once, kept.
    create_clients = [create.client() for _ in range(max_clients)]
    describe_clients = [describe.client() for _ in range(max_clients)]
    run = secrets.token_hex(3)
    counter = iter(range(10**9))

    def open_create(index: int) -> tuple[int, Any]:
        create_clients[index].describe_users(UserId="default")  # connected first
        return index, create_clients[index]

    def create_user(worker: tuple[int, Any], _n: int) -> str:
        user_id = f"b{run}{next(counter)}"
        return moto_code(
            lambda: worker[1].create_user(
                UserId=user_id,
                UserName=user_id,
                Engine="redis",
                AccessString="on ~* +@all",
                Passwords=[_password() * 2],
            )
        )

    def open_describe(index: int) -> tuple[int, Any]:
        describe_clients[index].describe_users(UserId="default")
        return index, describe_clients[index]

    def describe_users(worker: tuple[int, Any], _n: int) -> str:
        return moto_code(lambda: worker[1].describe_users())

    return [
        Side("moto CreateUser", open_create, create_user, lambda _w: None, create.cpu),
        Side("moto DescribeUsers", open_describe, describe_users, lambda _w: None, describe.cpu),
    ]


# --------------------------------------------------------------------------- setup


def provision(server: Server, url: str) -> tuple[list[str], list[int], list[str], int]:
    """8 instances with an account ``bench``: ids, master ports, management passwords,
    and how many accounts DescribeAccounts shows on one."""
    ids, ports = [], []
    with server.client() as client:
        for _ in range(INSTANCES):
            ids.append(client.call("CreateInstance", {"NodeType": "STAND_ALONE"})["InstanceId"])
        for iid in ids:
            ports.append(int(wait_normal(client, iid)["Port"]))
            params = {"InstanceId": iid, "AccountName": "bench", "AccountPassword": _password()}
            client.call("CreateAccount", params)
        shown = int(client.call("DescribeAccounts", {"InstanceId": ids[0]})["TotalCount"])
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tokens = dict(
                conn.execute(
                    select(instances.c.instance_id, instances.c.mgmt_password_encrypted).where(
                        instances.c.instance_id.in_(ids)
                    )
                ).all()
            )
    finally:
        engine.dispose()
    return ids, ports, [server.open_token(tokens[i]) for i in ids], shown


def redis_pids(server: Server, ports: list[int]) -> list[int]:
    """The redis-server processes (children of the server) listening on ``ports``."""
    wanted = {f":{p}" for p in ports}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "redis-server" in cmdline and any(w in cmdline for w in wanted):
                found.append(int(entry))
    return found


# --------------------------------------------------------------------------- run


def run_database(
    kind: str,
    counts: list[int],
    seconds: float,
    repeat: int,
    env: dict[str, str],
    workers: list[int],
) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rkvstore-bench-")))
        # One server per worker count, each on its own database and instances.
        servers: list[tuple[int, Server, list[str]]] = []
        floor_nodes: tuple[list[int], list[str], list[int]] | None = None
        shown = 0
        for w in workers:
            url = stack.enter_context(database_url(kind, tmp / f"w{w}"))
            extra = {"RKVSTORE_WORKERS": str(w)} if workers != [1] else {}
            server = start_server(
                f"{kind}-{w}", tmp / f"w{w}" / "data", url, env={**QUIET, **env, **extra}
            )
            stack.callback(server.stop)
            ids, ports, passwords, shown = provision(server, url)
            servers.append((w, server, ids))
            if floor_nodes is None:
                floor_nodes = (ports, passwords, redis_pids(server, ports))
        assert floor_nodes is not None
        create, describe = start_moto(), start_moto()
        stack.callback(create.stop)
        stack.callback(describe.stop)
        null_server = start_null_server()
        stack.callback(null_server.stop)
        moto_users = describe.hold_users(shown)
        print(
            f"\n{kind}: {INSTANCES} STAND_ALONE instances per server; DescribeAccounts shows "
            f"{shown} accounts, moto's DescribeUsers {moto_users} users; floor on the "
            f"{len(floor_nodes[2])} redis-server nodes of the first server"
            + (f"; servers with {', '.join(map(str, workers))} workers" if workers != [1] else "")
        )
        rk: dict[int, list[Side]] = {
            w: rkvstore_sides(server, ids, f", {w} worker{'s' * (w > 1)}" if workers != [1] else "")
            for w, server, ids in servers
        }
        floor = floor_side(*floor_nodes)
        null = null_side(null_server, servers[0][2])
        moto_create, moto_describe = moto_sides(create, describe, max(counts))
        order = [
            *(rk[w][0] for w in workers),
            floor,
            null,
            moto_create,
            *(rk[w][1] for w in workers),
            moto_describe,
        ]
        for side in order:  # warm-up: connections, caches, first-call paths
            drive(2, 0.5, side.open_worker, side.call, side.close_worker)
        results = Results()
        for rep in range(repeat):
            for clients in counts:
                for side in rotations(order, rep + clients):
                    sql0 = side.sql() if side.sql else None
                    block = drive(
                        clients, seconds, side.open_worker, side.call, side.close_worker, side.cpu
                    )
                    results.blocks.setdefault((side.name, clients), []).append(block)
                    if side.sql and sql0 is not None:
                        key = (side.name, clients)
                        results.sql[key] = results.sql.get(key, Sql()) + (side.sql() - sql0)
        pairs = []
        for w in workers:
            reset, accounts = rk[w][0].name, rk[w][1].name
            pairs += [
                (f"{reset} ÷ moto CreateUser", reset, moto_create.name),
                (f"{reset} ÷ floor", reset, floor.name),
                (f"{accounts} ÷ moto DescribeUsers", accounts, moto_describe.name),
            ]
        pairs.append((f"{null.name} ÷ moto CreateUser", null.name, moto_create.name))
        for w in workers[1:]:
            base = rk[workers[0]]
            pairs += [
                (f"{rk[w][0].name} ÷ {base[0].name}", rk[w][0].name, base[0].name),
                (f"{rk[w][1].name} ÷ {base[1].name}", rk[w][1].name, base[1].name),
            ]
        report(order, counts, results, pairs)


def report(
    order: list[Side], counts: list[int], results: Results, pairs: list[tuple[str, str, str]]
) -> None:
    w = max(len(side.name) for side in order)
    print(
        f"{'clients':>7s} {'side':{w}s} {'ok/s median (min-max)':>24s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'server CPU':>11s} {'client CPU':>11s}  errors"
    )
    print(f"{'':7s} {'':{w}s} {'':24s} {'':7s} {'':7s} {'ms per call':>11s} {'ms per call':>11s}")
    for clients in counts:
        for side in order:
            blocks = results.blocks[(side.name, clients)]
            ok = sum(b.ok for b in blocks)
            latencies = [x for b in blocks for x in b.latencies]
            codes = Counter[str]()
            for b in blocks:
                codes.update(b.codes)
            server_cpu = sum(b.server_cpu for b in blocks) / max(1, ok) * 1000
            client_cpu = sum(b.client_cpu for b in blocks) / max(1, ok) * 1000
            print(
                f"{clients:7d} {side.name:{w}s} {spread([b.rate for b in blocks], 1):>24s} "
                f"{median(latencies) * 1000:7.2f} {percentile(latencies, 0.99) * 1000:7.2f} "
                f"{server_cpu:11.2f} {client_cpu:11.2f}  {dict(codes) or '-'}"
            )
            sql = results.sql.get((side.name, clients))
            if sql is not None and clients == counts[0]:
                print(f"{'':7s} {'':{w}s} SQL per call: {sql.per(ok)}")
    print("\nratios of successful calls per second, per repetition: median (min-max)")
    lw = max(len(label) for label, _, _ in pairs)
    print(f"{'':{lw}s} " + " ".join(f"{f'{c} clients':>17s}" for c in counts))
    for label, top, bottom in pairs:
        cells = []
        for clients in counts:
            ratios = [
                a.rate / b.rate
                for a, b in zip(
                    results.blocks[(top, clients)], results.blocks[(bottom, clients)], strict=True
                )
                if b.rate
            ]
            cells.append(f"{spread(ratios):>17s}")
        print(f"{label:{lw}s} " + " ".join(cells))
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32", help="client counts [1,8,32]")
    parser.add_argument("--seconds", type=float, default=3.0, help="per block [3]")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, at least 3 [3]")
    parser.add_argument(
        "--workers",
        default="1",
        help="comma list: one rkvstore serve per count (RKVSTORE_WORKERS), side by side [1]",
    )
    common_arguments(parser, "sqlite")
    args = parser.parse_args()
    workers = sorted({max(1, min(int(w), 16)) for w in args.workers.split(",") if w.strip()})
    counts = [max(1, min(int(c), 256)) for c in args.clients.split(",") if c.strip()]
    seconds = max(0.5, min(args.seconds, 60.0))
    repeat = max(3, min(args.repeat, 20))
    kinds = database_kinds(args.databases)
    env = server_env(args.server_env)
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError:
        raise SystemExit("moto and boto3 are missing: pip install -e '.[bench]'") from None

    started = print_start(
        f"Throughput at {', '.join(map(str, counts))} concurrent clients: rkvstore, the floor "
        f"and moto in interleaved blocks of {seconds:.1f} s, {repeat} repetitions. "
        f"rkvstore's per-AccessKey throttle is OFF for this run "
        f"(RKVSTORE_RATE_LIMIT_PER_SECOND=0); its reconciler passes hourly"
        + (f"; server settings {env}" if env else "")
    )
    for kind in kinds:
        if kind == "postgresql" and not pg_reachable():
            print("postgresql: not reachable on 127.0.0.1:5432 (RKVSTORE_BENCH_PG_URL); skipped")
            continue
        run_database(kind, counts, seconds, repeat, env, workers)
    print_end(started)


if __name__ == "__main__":
    main()
