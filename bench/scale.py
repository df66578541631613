"""Listings and the reconciler at 10, 1,000 and 10,000 instances, as ratios to the smallest.

    python bench/scale.py [--sizes 10,1000,10000] [--requests 15] [--repeat 3]
                          [--databases sqlite] [--verify-interval 10] [--window 20]
                          [--warmup 60] [--settle 240]

For each database in ``--databases`` and each size, a fresh database (a
SQLite file; or a new PostgreSQL database on 127.0.0.1:5432, dropped after)
gets a tenant (``rkvstore tenants create``) and then, in bulk through the
project's own tables, that many instances of 20 accounts each. Then:

1. Listings. One ``rkvstore serve`` per size, all at once, the reconciler's
   periodic work slowed to hourly (``RKVSTORE_RECONCILE_INTERVAL_SECONDS`` and
   ``RKVSTORE_VERIFY_INTERVAL_SECONDS``; whatever a server does at start is
   waited out, up to ``--settle`` seconds, and printed). In each repetition,
   for each request, blocks of ``--requests`` sequential signed calls go to
   every size in rotating order: DescribeInstances (page 1 of 30),
   DescribeInstances ``InstanceIds=<one>``, DescribeInstances (the last page),
   DescribeAccounts (20 accounts). Printed: p50, the ratio of each size's p50
   to the smallest size's in the same repetition (median, min-max), server
   CPU and SQL statements per request. The answers are checked (totals,
   page lengths).
2. The reconciler. One size at a time, ``rkvstore serve`` with both intervals
   set to ``--verify-interval`` and no requests: once every instance's node
   was visited (first visits learn what a node shows; at least one interval,
   at most ``--warmup`` seconds), over a window of ``--window`` seconds, the
   server's CPU, the node visits (how many times an instance's node was
   looked at, counted at the node side) and the SQL statements. Printed: %
   of a core, CPU per visit, CPU per round (per visit x instances: every
   instance verified once), what that is at a 300 s interval, and how many of
   the instances were visited.

What stands in for the nodes (10,000 redis-servers do not fit): every
instance is a *registered* instance (registered rather than local, so that
no rkvstore process tries to supervise processes that are not there) with
one node at its own port on 127.0.0.2; relay processes listen on those ports
and pipe every connection to one of two real redis-servers, which hold the
management user and the same 20 accounts as every instance (see
bench/_standin.py). The relay's and the real nodes' CPU are printed apart.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    Server,
    Sql,
    answer_code,
    common_arguments,
    database_kinds,
    database_url,
    median,
    pg_reachable,
    print_end,
    print_start,
    process_cpu,
    rotations,
    server_env,
    spread,
    start_server,
    wait_idle,
)
from _seed import ACCOUNTS, create_tenant, seed
from _standin import HOST, RealNodes, Relay, redis_binary, start_real_nodes
from cryptography.fernet import Fernet

from rkvstore.domain.accounts import MANAGEMENT_USER

PAGE = 30
REAL_NODES = 2
QUIET = {
    "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "3600",
    "RKVSTORE_VERIFY_INTERVAL_SECONDS": "3600",
}
NOFILE = 65536  # a server of 10,000 instances keeps a connection per node


@dataclass
class Fleet:
    """One size: its database, its tenant key, its server."""

    size: int
    url: str
    data_dir: Path
    key: tuple[str, str]
    ids: list[str]
    server: Server | None = None

    @property
    def middle(self) -> str:
        return self.ids[len(self.ids) // 2]

    @property
    def last_page(self) -> int:
        return math.ceil(self.size / PAGE)


@dataclass
class Shared:
    master_key: str
    management_password: str
    account_sha256: str
    engine_version: str
    relay: Relay
    real: RealNodes
    env: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- phase 1: listings


REQUESTS: list[tuple[str, str]] = [
    ("DescribeInstances, page 1", "first"),
    ("DescribeInstances, InstanceIds=<one>", "one"),
    ("DescribeInstances, last page", "last"),
    ("DescribeAccounts, 20 accounts", "accounts"),
]


def request_for(fleet: Fleet, kind: str) -> tuple[str, dict[str, Any]]:
    if kind == "first":
        return "DescribeInstances", {"PageSize": PAGE}
    if kind == "one":
        return "DescribeInstances", {"InstanceIds": fleet.middle}
    if kind == "last":
        return "DescribeInstances", {"PageSize": PAGE, "PageNumber": fleet.last_page}
    return "DescribeAccounts", {"InstanceId": fleet.middle}


def check_answer(fleet: Fleet, kind: str, body: dict[str, Any]) -> str | None:
    """What is wrong with the answer, if anything (the listings are being rewritten)."""
    if kind == "accounts":
        shown = body.get("Accounts", {}).get("Account", [])
        if body.get("TotalCount") != ACCOUNTS or len(shown) != ACCOUNTS:
            return f"TotalCount {body.get('TotalCount')}, {len(shown)} shown; wanted {ACCOUNTS}"
        return None
    shown = [i["InstanceId"] for i in body.get("Instances", {}).get("KVStoreInstance", [])]
    if kind == "one":
        wanted_total, wanted = 1, [fleet.middle]
    elif kind == "first":
        wanted_total, wanted = fleet.size, fleet.ids[:PAGE]
    else:
        wanted_total, wanted = fleet.size, fleet.ids[(fleet.last_page - 1) * PAGE :]
    if body.get("TotalCount") != wanted_total or shown != wanted:
        return (
            f"TotalCount {body.get('TotalCount')} (wanted {wanted_total}), "
            f"{len(shown)} shown (wanted {len(wanted)}){'' if shown == wanted else ', other ids'}"
        )
    return None


@dataclass
class Cell:
    p50s: list[float] = field(default_factory=list)
    cpu: float = 0.0
    sql: Sql = field(default_factory=Sql)
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def listings(fleets: list[Fleet], n: int, repeat: int) -> None:
    cells: dict[tuple[str, int], Cell] = {}
    clients = {}
    with contextlib.ExitStack() as stack:
        for fleet in fleets:
            assert fleet.server is not None
            clients[fleet.size] = stack.enter_context(fleet.server.client(timeout=300))
        for fleet in fleets:  # warm-up and a check of every answer
            for label, kind in REQUESTS:
                action, params = request_for(fleet, kind)
                response = clients[fleet.size].request(action, params)
                if response.status_code != 200:
                    print(f"  {fleet.size}: {label} answered {answer_code(response)}")
                    continue
                problem = check_answer(fleet, kind, response.json())
                if problem:
                    print(f"  {fleet.size}: {label}: WRONG ANSWER: {problem}")
        for rep in range(repeat):
            for label, kind in REQUESTS:
                for fleet in rotations(fleets, rep):
                    server = fleet.server
                    assert server is not None
                    client = clients[fleet.size]
                    action, params = request_for(fleet, kind)
                    cell = cells.setdefault((label, fleet.size), Cell())
                    latencies = []
                    cpu0, sql0 = server.cpu(), server.sql()
                    for _ in range(n):
                        started = time.perf_counter()
                        response = client.request(action, params)
                        latencies.append(time.perf_counter() - started)
                        if response.status_code != 200:
                            code = answer_code(response)
                            cell.errors[code] = cell.errors.get(code, 0) + 1
                    cell.cpu += server.cpu() - cpu0
                    cell.sql += server.sql() - sql0
                    cell.requests += n
                    cell.p50s.append(median(latencies))
    base = fleets[0].size
    print(
        f"\n{'request':38s} {'instances':>9s} {'p50 ms':>8s} "
        f"{f'÷ at {base}: median (min-max)':>30s} {'server CPU':>11s} {'SQL':>11s}"
    )
    print(f"{'':38s} {'':9s} {'':8s} {'':30s} {'ms/request':>11s} {'stmts/req':>11s}")
    for label, _kind in REQUESTS:
        for fleet in fleets:
            cell = cells[(label, fleet.size)]
            ratios = [a / b for a, b in zip(cell.p50s, cells[(label, base)].p50s, strict=True)]
            print(
                f"{label:38s} {fleet.size:9d} {median(cell.p50s) * 1000:8.2f} "
                f"{spread(ratios):>30s} {cell.cpu / cell.requests * 1000:11.2f} "
                f"{cell.sql.statements / cell.requests:11.1f}"
                + (f"  errors {cell.errors}" if cell.errors else "")
            )
    sys.stdout.flush()


# --------------------------------------------------------------------------- phase 2: reconciler


def reconciler(fleet: Fleet, shared: Shared, interval: float, window: float, warmup: float) -> None:
    env = {
        **shared.env,
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": f"{interval:g}",
        "RKVSTORE_VERIFY_INTERVAL_SECONDS": f"{interval:g}",
    }
    group = str(fleet.size)
    shared.relay.reset(group)
    server = start_server(
        f"reconciler-{fleet.size}",
        fleet.data_dir,
        fleet.url,
        env=env,
        access_key=fleet.key,
        master_key=shared.master_key,
        nofile=NOFILE,
    )
    standin = [*shared.relay.pids, *shared.real.cpu_pids()]
    try:
        # A first visit learns what the node shows (and may rewrite its users
        # to learn it); the window is to see the rounds after that: it starts
        # once every instance was visited, after at least one interval, or
        # after ``warmup`` seconds all the same.
        started = time.monotonic()
        while True:
            time.sleep(1)
            settled = time.monotonic() - started
            first = shared.relay.stats(group)[1]
            if settled >= interval and (first >= fleet.size or settled >= warmup):
                break
        shared.relay.reset(group)
        cpu0, sql0, calls0 = server.cpu(), server.sql(), shared.real.command_calls()
        standin0 = sum(process_cpu(p, exclude=()) for p in standin)
        began = time.monotonic()
        time.sleep(window)
        visits, distinct, accepted = shared.relay.stats(group)
        elapsed = time.monotonic() - began
        cpu, sql = server.cpu() - cpu0, server.sql() - sql0
        standin_cpu = sum(process_cpu(p, exclude=()) for p in standin) - standin0
        calls1 = shared.real.command_calls()
    finally:
        server.stop()
    calls = {k: v - calls0.get(k, 0) for k, v in calls1.items() if v - calls0.get(k, 0) > 0}
    per_visit = cpu / visits if visits else float("nan")
    round_cpu = per_visit * fleet.size
    print(
        f"{fleet.size:9d} {100 * cpu / elapsed:10.1f} {visits:8d} "
        f"{distinct:>7d}/{fleet.size:<7d} {per_visit * 1000:10.2f} {round_cpu:10.2f} "
        f"{100 * round_cpu / 300:10.1f} {sql.statements / max(1, visits):10.1f} "
        f"{100 * standin_cpu / elapsed:9.1f}"
    )
    if first < fleet.size:
        print(
            f"{'':9s} only {first} of {fleet.size} instances were visited in the first "
            f"{settled:.0f} s: the window includes first visits"
        )
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
    print(
        f"{'':9s} node commands per visit: "
        + ", ".join(f"{k} {v / max(1, visits):.2f}" for k, v in top)
        + f"; connections opened per visit {accepted / max(1, visits):.2f}"
    )
    sys.stdout.flush()


# --------------------------------------------------------------------------- run


def run_database(
    kind: str, sizes: list[int], shared: Shared, args: argparse.Namespace, tmp: Path
) -> None:
    with contextlib.ExitStack() as stack:
        fleets = []
        for size in sizes:
            data_dir = tmp / f"{kind}-{size}"
            data_dir.mkdir()
            url = stack.enter_context(database_url(kind, data_dir))
            started = time.monotonic()
            account_id, key_id, key_secret = create_tenant(data_dir, url, shared.master_key)
            ids = seed(
                size,
                url,
                account_id,
                shared.relay.ports[str(size)],
                master_key=shared.master_key,
                management_password=shared.management_password,
                account_sha256=shared.account_sha256,
                engine_version=shared.engine_version,
            )
            print(
                f"{kind}: seeded {size} instances x {ACCOUNTS} accounts "
                f"in {time.monotonic() - started:.1f} s",
                flush=True,
            )
            fleets.append(Fleet(size, url, data_dir, (key_id, key_secret), ids))
        try:
            for fleet in fleets:
                fleet.server = start_server(
                    f"listings-{fleet.size}",
                    fleet.data_dir,
                    fleet.url,
                    env={**QUIET, **shared.env},
                    access_key=fleet.key,
                    master_key=shared.master_key,
                    nofile=NOFILE,
                )
            deadline = time.monotonic() + args.settle
            for fleet in fleets:
                assert fleet.server is not None
                waited, _ = wait_idle(fleet.server, timeout=max(1.0, deadline - time.monotonic()))
                print(
                    f"{kind} {fleet.size}: the server's start (imports, migrations, whatever "
                    f"passes it makes at start) took {fleet.server.cpu():.1f} s of CPU in all; "
                    f"idle {waited:.0f} s after it answered"
                    + ("" if time.monotonic() < deadline else " (NOT idle: --settle ran out)"),
                    flush=True,
                )
            print(
                f"\n{kind}: listings, {args.repeat} repetitions of blocks of {args.requests} "
                f"sequential requests, sizes in rotating order"
            )
            listings(fleets, args.requests, args.repeat)
        finally:
            for fleet in fleets:
                if fleet.server is not None:
                    fleet.server.stop()
        print(
            f"\n{kind}: the reconciler, idle of requests, RKVSTORE_RECONCILE_INTERVAL_SECONDS = "
            f"RKVSTORE_VERIFY_INTERVAL_SECONDS = {args.verify_interval:g}; measured over "
            f"{args.window:g} s once every instance was visited (at least "
            f"{args.verify_interval:g} s, at most {args.warmup:g} s after the start)"
        )
        print(
            f"{'instances':>9s} {'% of core':>10s} {'visits':>8s} {'visited':>15s} "
            f"{'CPU/visit':>10s} {'CPU/round':>10s} {'% at 300s':>10s} {'SQL/visit':>10s} "
            f"{'stand-in%':>9s}"
        )
        print(
            f"{'':9s} {'':10s} {'':8s} {'':15s} {'ms':>10s} {'s':>10s} {'of core':>10s} "
            f"{'stmts':>10s} {'of core':>9s}"
        )
        for fleet in fleets:
            reconciler(fleet, shared, args.verify_interval, args.window, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000", help="instances [10,1000,10000]")
    parser.add_argument("--requests", type=int, default=15, help="per block [15]")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, at least 3 [3]")
    parser.add_argument(
        "--verify-interval", type=float, default=10.0, help="seconds, for part 2 [10]"
    )
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured [20]")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="most seconds before the window [60]"
    )
    parser.add_argument(
        "--settle", type=float, default=240.0, help="most seconds to wait for idle servers [240]"
    )
    common_arguments(parser, "sqlite")
    args = parser.parse_args()
    sizes = sorted({max(1, min(int(s), 50_000)) for s in args.sizes.split(",") if s.strip()})
    args.requests = max(3, min(args.requests, 1000))
    args.repeat = max(3, min(args.repeat, 20))
    args.verify_interval = max(1.0, min(args.verify_interval, 600.0))
    args.window = max(2.0, min(args.window, 600.0))
    args.warmup = max(args.verify_interval, min(args.warmup, 3600.0))
    kinds = database_kinds(args.databases)
    env = server_env(args.server_env)

    started = print_start(
        f"Listings and the reconciler at {', '.join(map(str, sizes))} instances x {ACCOUNTS} "
        f"accounts; throttling off" + (f"; server settings {env}" if env else "")
    )
    binary, version = redis_binary()
    password = "Aa1" + secrets.token_urlsafe(18)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rkvstore-scale-")))
        processes = start_real_nodes(
            tmp / "real",
            REAL_NODES,
            binary,
            MANAGEMENT_USER,
            hashlib.sha256(password.encode()).hexdigest(),
        )
        real = RealNodes(
            processes,
            [str(tmp / "real" / f"node{i}" / "redis.sock") for i in range(REAL_NODES)],
            MANAGEMENT_USER,
            password,
        )
        stack.callback(real.stop)
        gap = min(1.0, args.verify_interval / 4)
        relay = Relay({str(s): s for s in sizes}, real.sockets, gap)
        stack.callback(relay.stop)
        ports = [p for group in relay.ports.values() for p in group]
        print(
            f"stand-in nodes: every instance is a registered instance (engine {version}) "
            f"whose one node is its own port on {HOST} ({min(ports)}-{max(ports)}), "
            f"served by {len(relay.processes)} relay process(es) that pipe each "
            f"connection to one of {REAL_NODES} real redis-servers ({binary}, Unix "
            f"sockets) holding the management user and the same {ACCOUNTS} accounts as "
            f"every instance; a visit = a burst of traffic to one port after {gap:g} s "
            "of quiet",
            flush=True,
        )
        shared = Shared(
            master_key=Fernet.generate_key().decode(),
            management_password=password,
            account_sha256=hashlib.sha256(b"Bench_account_pw_1").hexdigest(),
            engine_version=version,
            relay=relay,
            real=real,
            env=env,
        )
        for kind in kinds:
            if kind == "postgresql" and not pg_reachable():
                print("postgresql: not reachable on 127.0.0.1:5432 (RKVSTORE_BENCH_PG_URL)")
                continue
            run_database(kind, sizes, shared, args, tmp)
    print_end(started)


if __name__ == "__main__":
    main()
