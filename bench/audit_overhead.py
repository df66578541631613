"""What the audit trail costs a reset: ResetAccountPassword p50 with auditing on ÷ off.

    python bench/audit_overhead.py [--requests 200] [--repeat 5] [--databases sqlite]

For each database it starts two ``rkvstore serve`` side by side, alike but for
``RKVSTORE_AUDIT`` (``on``, ``off``), each with its own database (SQLite in a
temporary data dir; PostgreSQL: fresh databases on 127.0.0.1:5432, created and
dropped by the script), throttling off, the periodic reconciler slowed to once
an hour. Each gets a STAND_ALONE instance with an account ``bench``. Then
``--repeat`` repetitions of two interleaved blocks, their order alternating:
``--requests`` signed V3 ResetAccountPassword calls, one after the other over
one keep-alive connection, to the server with auditing on, and as many to the
one with auditing off.

Printed per database: each side's p50 and p99, the ratio on ÷ off of the p50
(median and min-max over the repetitions, each repetition's ratio from its own
two blocks), the same ratio of the server's CPU per reset (steadier than
latency on a shared machine), and the SQL per reset each side made (statements, transactions,
pool checkouts, counted inside the server by bench/_probe): auditing adds one
INSERT to the reset's own record transaction and no transaction. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from _common import (
    Server,
    Sql,
    common_arguments,
    database_kinds,
    database_url,
    median,
    percentile,
    pg_reachable,
    print_end,
    print_start,
    rotations,
    server_env,
    spread,
    start_server,
    wait_normal,
)
from reset import _end_to_end as _resets  # the same reset loop as bench/reset.py
from reset import _password

from rkvstore.client import RpcClient

QUIET = {
    "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "3600",
    "RKVSTORE_VERIFY_INTERVAL_SECONDS": "3600",
}
SIDES = ("on", "off")


def _prepared(server: Server, client: RpcClient) -> str:
    iid = str(client.call("CreateInstance", {"NodeType": "STAND_ALONE"})["InstanceId"])
    wait_normal(client, iid)
    params = {"InstanceId": iid, "AccountName": "bench", "AccountPassword": _password(0)}
    client.call("CreateAccount", params)
    _resets(client, iid, 20, 0)  # warm-up: connections, caches, first-call paths
    return iid


def run_database(kind: str, n: int, repeat: int, env: dict[str, str]) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rkvstore-bench-")))
        sides: dict[str, tuple[Server, RpcClient, str]] = {}
        for side in SIDES:
            url = stack.enter_context(database_url(kind, tmp / side))
            server = start_server(
                f"audit {side}",
                tmp / side / "data",
                url,
                env={**QUIET, **env, "RKVSTORE_AUDIT": side},
            )
            stack.callback(server.stop)
            client = stack.enter_context(server.client())
            sides[side] = (server, client, _prepared(server, client))
        ratios: list[float] = []
        cpu_ratios: list[float] = []
        every: dict[str, list[float]] = {side: [] for side in SIDES}
        sql = {side: Sql() for side in SIDES}
        for rep in range(repeat):
            block: dict[str, list[float]] = {}
            cpu: dict[str, float] = {}
            for side in rotations(list(SIDES), rep):
                server, client, iid = sides[side]
                sql0, cpu0 = server.sql(), server.cpu()
                block[side] = _resets(client, iid, n, 1000 + rep * n)
                cpu[side] = server.cpu() - cpu0
                sql[side] += server.sql() - sql0
                every[side] += block[side]
            ratios.append(median(block["on"]) / median(block["off"]))
            cpu_ratios.append(cpu["on"] / cpu["off"])
        total = n * repeat
        for side in SIDES:
            print(
                f"{kind:10s} audit {side:3s} | reset p50 {median(every[side]) * 1000:6.2f} ms "
                f"p99 {percentile(every[side], 0.99) * 1000:6.2f} ms | SQL per reset: "
                f"{sql[side].per(total)}"
            )
        print(
            f"{kind:10s} ratio p50 on ÷ off {spread(ratios, 3)}; "
            f"server CPU per reset on ÷ off {spread(cpu_ratios, 3)}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per block [200]")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions, at least 3 [5]")
    common_arguments(parser, "sqlite")
    args = parser.parse_args()
    n, repeat = max(10, min(args.requests, 10_000)), max(3, min(args.repeat, 50))
    env = server_env(args.server_env)
    started = print_start(
        f"ResetAccountPassword with the audit trail on vs off (RKVSTORE_AUDIT): {repeat} "
        f"repetitions of interleaved blocks of {n} sequential requests each (V3, one "
        f"keep-alive connection, STAND_ALONE); throttling off; reconciler passes hourly"
        + (f"; server settings {env}" if env else "")
    )
    for kind in database_kinds(args.databases):
        if kind != "postgresql" or pg_reachable():
            run_database(kind, n, repeat, env)
        else:
            print("postgresql: not reachable (RKVSTORE_BENCH_PG_URL); skipped")
    print_end(started)


if __name__ == "__main__":
    main()
