"""ResetAccountPassword end to end, beside the floor measured in the same run.

    python bench/reset.py [--requests 200] [--repeat 5] [--databases sqlite,postgresql]

For each database (SQLite in a temporary data dir; PostgreSQL: a fresh
database on 127.0.0.1:5432, created and dropped by the script) it starts
``rkvstore serve`` (throttling off, the periodic reconciler slowed to once an
hour so that what is counted is the requests' own work), creates a
STAND_ALONE and a MASTER_SLAVE instance with an account ``bench``, and for
each instance runs ``--repeat`` repetitions of two interleaved blocks, their
order alternating:

- end to end: ``--requests`` signed V3 ResetAccountPassword calls, one after
  the other over one keep-alive connection;
- floor: as many ``ACL SETUSER bench_floor reset on #<sha256> ~* +@all`` then
  ``ACL SAVE``, sent with redis-py straight to the instance's master node (for
  MASTER_SLAVE the reset changes both nodes; the floor is one).
- null server: the same signed ResetAccountPassword calls, same client, to
  ``bench/_null_app.py`` (uvicorn with httptools and uvloop answering 200
  without any work): what this client and HTTP cost by themselves. Its p50 ÷
  the floor's is the least ratio any server could show this benchmark.

Printed per database and node type: the p50 and p99 of each side, the
ratios end to end / floor of the p50 and of the p99, null server / floor (median and min-max over
the repetitions), the server's CPU per reset, and the SQL per reset: the
statements, transactions and pool checkouts SQLAlchemy made inside the server
(counted by bench/_probe), and on PostgreSQL the transactions PostgreSQL
itself counted for the database (pg_stat_database). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from _common import (
    Server,
    Sql,
    common_arguments,
    database_kinds,
    database_url,
    median,
    percentile,
    pg_reachable,
    pg_transactions,
    print_end,
    print_start,
    rotations,
    server_env,
    spread,
    start_null_server,
    start_server,
    wait_normal,
)
from sqlalchemy import create_engine, select

from rkvstore.client import RpcClient
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.store.tables import instances

IDLE_SECONDS = 3.0
# The reconciler's periodic passes (old and new settings) are not the requests' work.
QUIET = {
    "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "3600",
    "RKVSTORE_VERIFY_INTERVAL_SECONDS": "3600",
}


def _password(i: int) -> str:
    return f"Bench_pw_{i:06d}x"


def _end_to_end(client: RpcClient, instance_id: str, n: int, offset: int) -> list[float]:
    latencies = []
    for i in range(n):
        params = {
            "InstanceId": instance_id,
            "AccountName": "bench",
            "AccountPassword": _password(offset + i),
        }
        started = time.perf_counter()
        response = client.request("ResetAccountPassword", params)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"reset answered {response.status_code}: {response.text}")
    return latencies


def _floor(node: redis.Redis, n: int, offset: int) -> list[float]:
    latencies = []
    for i in range(n):
        digest = hashlib.sha256(_password(offset + i).encode()).hexdigest()
        started = time.perf_counter()
        node.execute_command(
            "ACL", "SETUSER", "bench_floor", "reset", "on", f"#{digest}", "~*", "+@all"
        )
        node.execute_command("ACL", "SAVE")
        latencies.append(time.perf_counter() - started)
    return latencies


def _management_password(database: str, instance_id: str) -> str:
    """Its Fernet token, as the server stored it (an operator with the master key can read it)."""
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            token = conn.execute(
                select(instances.c.mgmt_password_encrypted).where(
                    instances.c.instance_id == instance_id
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return str(token)


def run_database(
    kind: str, n: int, repeat: int, node_types: list[str], env: dict[str, str]
) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rkvstore-bench-")))
        url = stack.enter_context(database_url(kind, tmp))
        server = start_server(kind, tmp / "data", url, env={**QUIET, **env})
        stack.callback(server.stop)
        client = stack.enter_context(server.client())
        null = start_null_server()
        stack.callback(null.stop)
        null_client = stack.enter_context(null.client())
        targets = []
        for node_type in node_types:
            iid = client.call("CreateInstance", {"NodeType": node_type})["InstanceId"]
            port = int(wait_normal(client, iid)["Port"])
            params = {"InstanceId": iid, "AccountName": "bench", "AccountPassword": _password(0)}
            client.call("CreateAccount", params)
            targets.append((node_type, iid, port))
        nodes = []
        for _node_type, iid, port in targets:
            password = server.open_token(_management_password(url, iid))
            node = redis.Redis(port=port, username=MANAGEMENT_USER, password=password)
            stack.callback(_drop_floor_user, node)
            nodes.append(node)
        for (_node_type, iid, _port), node in zip(targets, nodes, strict=True):
            _end_to_end(client, iid, 20, 0)  # warm-up: connections, caches, first-call paths
            _end_to_end(null_client, iid, 20, 0)
            _floor(node, 20, 0)
        # What the server does with no request at all (background rounds): in
        # the per-reset figures below, not taken out of them; said here so the
        # reader can.
        cpu0, sql0 = server.cpu(), server.sql()
        time.sleep(IDLE_SECONDS)
        idle_cpu, idle_sql = server.cpu() - cpu0, server.sql() - sql0
        print(
            f"{kind:10s} idle, {IDLE_SECONDS:g} s without requests: server CPU "
            f"{idle_cpu / IDLE_SECONDS * 1000:.1f} ms/s, "
            f"{idle_sql.statements / IDLE_SECONDS:.1f} SQL statements/s",
            flush=True,
        )
        # PostgreSQL's count, read between the measurements only: nothing else
        # uses the database then (the floor does not touch it).
        xacts = pg_transactions(url) if kind == "postgresql" else 0
        for (node_type, iid, _port), node in zip(targets, nodes, strict=True):
            xacts = measure(
                kind,
                node_type,
                server,
                (client, null_client, null.cpu),
                iid,
                node,
                n,
                repeat,
                xacts,
            )


def _drop_floor_user(node: redis.Redis) -> None:
    node.execute_command("ACL", "DELUSER", "bench_floor")
    node.execute_command("ACL", "SAVE")
    node.close()


def measure(
    kind: str,
    node_type: str,
    server: Server,
    clients: tuple[RpcClient, RpcClient, Callable[[], float]],
    iid: str,
    node: redis.Redis,
    n: int,
    repeat: int,
    xacts0: int,
) -> int:
    """Print one line group; PostgreSQL's transaction count after it (0 on SQLite)."""
    client, null_client, null_cpu = clients
    sql = Sql()
    ratios50, ratios99, cpu_per, e2e_all, floor_all, rates = [], [], [], [], [], []
    null50, null_all, null_cpu_per = [], [], []
    for rep in range(repeat):
        e2e: list[float] = []
        floor: list[float] = []
        null: list[float] = []
        for side in rotations(["e2e", "floor", "null"], rep):
            offset = 1000 + rep * n
            if side == "e2e":
                cpu0, sql0 = server.cpu(), server.sql()
                e2e = _end_to_end(client, iid, n, offset)
                cpu_per.append((server.cpu() - cpu0) / n)
                sql += server.sql() - sql0
            elif side == "null":
                cpu0 = null_cpu()
                null = _end_to_end(null_client, iid, n, offset)
                null_cpu_per.append((null_cpu() - cpu0) / n)
            else:
                floor = _floor(node, n, offset)
        ratios50.append(median(e2e) / median(floor))
        ratios99.append(percentile(e2e, 0.99) / percentile(floor, 0.99))
        null50.append(median(null) / median(floor))
        rates.append(len(e2e) / sum(e2e))
        e2e_all += e2e
        floor_all += floor
        null_all += null
    total = n * repeat
    print(
        f"{kind:10s} {node_type:12s} | end to end p50 {median(e2e_all) * 1000:6.2f} ms "
        f"p99 {percentile(e2e_all, 0.99) * 1000:6.2f} ms {statistics.median(rates):6.1f} req/s"
        f" | floor p50 {median(floor_all) * 1000:5.2f} ms "
        f"p99 {percentile(floor_all, 0.99) * 1000:5.2f} ms"
    )
    print(
        f"{'':23s} | ratio p50 {spread(ratios50)}  ratio p99 {spread(ratios99)}"
        f"  server CPU per reset {spread([c * 1000 for c in cpu_per])} ms"
    )
    print(
        f"{'':23s} | null server p50 {median(null_all) * 1000:5.2f} ms: ratio p50 "
        f"{spread(null50)} (the least any server could show this client); its CPU per call "
        f"{spread([c * 1000 for c in null_cpu_per])} ms"
    )
    line = f"{'':23s} | SQL per reset: {sql.per(total)}"
    xacts = 0
    if kind == "postgresql":
        xacts = pg_transactions(server.database_url)
        line += f"; PostgreSQL counted {(xacts - xacts0) / total:.1f} transactions"
    print(line, flush=True)
    return xacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per block [200]")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions, at least 3 [5]")
    parser.add_argument("--node-types", default="STAND_ALONE,MASTER_SLAVE")
    common_arguments(parser, "sqlite,postgresql")
    args = parser.parse_args()
    n = max(10, min(args.requests, 10_000))
    repeat = max(3, min(args.repeat, 50))
    node_types = [t.strip() for t in args.node_types.split(",") if t.strip()]
    kinds = database_kinds(args.databases)
    env = server_env(args.server_env)

    started = print_start(
        f"ResetAccountPassword end to end vs the floor (ACL SETUSER + ACL SAVE on the node): "
        f"{repeat} repetitions of interleaved blocks of {n} sequential requests each "
        f"(V3, one keep-alive connection); throttling off; reconciler passes hourly"
        + (f"; server settings {env}" if env else "")
    )
    for kind in kinds:
        if kind == "postgresql" and not pg_reachable():
            print("postgresql: not reachable on 127.0.0.1:5432 (RKVSTORE_BENCH_PG_URL); skipped")
            continue
        run_database(kind, n, repeat, node_types, env)
    print_end(started)


if __name__ == "__main__":
    main()
