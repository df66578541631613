"""Fan-out time for 1, 3 and 6 nodes, as a ratio to the 1-node time (target: <= 1.5 at 6).

    python bench/fanout.py [--rounds 300]

Starts six redis-server processes (rkvstore's local provider, loopback
ports, a temporary folder), then times rkvstore's engine applying one ACL
change — snapshot, ACL SETUSER, ACL SAVE, read back, on every node at once —
to the first 1, 3 and 6 of them. The same run also times the same change sent
to the 6 nodes one after another, to show what the concurrency buys, and a
floor: the same four commands written to every node at once and read back by
bare redis-py connections, with none of rkvstore's work — the ratio the
machine itself allows (on 2 cores, 6 Redis servers cannot all run at once).
Nothing is asserted; the numbers are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from rkvstore.domain.privileges import acl_rules
from rkvstore.engine.acl import DesiredUser, Node, UserChange
from rkvstore.engine.binary import find_binaries
from rkvstore.engine.local import LocalNode, LocalNodeManager
from rkvstore.engine.provider import acl_file_line
from rkvstore.engine.redis_engine import NodeAddress, RedisEngine, management_user
from rkvstore.services.instance_nodes import random_password


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _change(i: int, engine_version: str) -> UserChange:
    digest = hashlib.sha256(f"Bench_pw_{i:06d}".encode()).hexdigest()
    user = DesiredUser("bench", digest, tuple(acl_rules("RoleReadWrite", engine_version)))
    return UserChange("bench", user)


def _floor(targets: list[Node], change: UserChange) -> float:
    """The same batch, written to every node and read back raw: no parsing, no bookkeeping."""
    batch = [["ACL", "LIST"], change.command(), ["ACL", "SAVE"], ["ACL", "LIST"]]
    connections = [t.client.connection_pool.get_connection() for t in targets]
    started = time.perf_counter()
    for connection in connections:
        connection.send_packed_command(connection.pack_commands(batch))
    for connection in connections:
        for _ in batch:
            connection.read_response()
    elapsed = time.perf_counter() - started
    for target, connection in zip(targets, connections, strict=True):
        target.client.connection_pool.release(connection)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    rounds = max(20, min(parser.parse_args().rounds, 5000))

    binary = find_binaries()[0]
    mgmt = random_password()
    with tempfile.TemporaryDirectory(prefix="rkvstore-fanout-") as tmp:
        manager = LocalNodeManager(Path(tmp))
        nodes = [
            LocalNode("r-bench", f"r-bench-{i}", manager.allocate_port(), "master", None, binary)
            for i in range(6)
        ]
        engine = RedisEngine(node_timeout=5.0)
        try:
            default = acl_file_line(management_user(mgmt)).replace("rkvstore_mgmt", "default", 1)
            for node in nodes:
                manager.create(node, mgmt, [default])
            targets = engine.nodes([NodeAddress("127.0.0.1", n.port) for n in nodes], mgmt)
            version = binary.engine_version
            for i in range(20):  # warm-up: connections, rendering
                engine.apply(targets, [_change(i, version)])
            print(
                f"one ACL change (snapshot, SETUSER, SAVE, read back), {rounds} rounds, "
                f"Redis {binary.version}"
            )
            base = 0.0
            for count in (1, 3, 6):
                times = []
                for i in range(rounds):
                    started = time.perf_counter()
                    engine.apply(targets[:count], [_change(i, version)])
                    times.append(time.perf_counter() - started)
                p50 = statistics.median(times)
                base = base or p50
                print(
                    f"  {count} node(s) concurrently: p50 {p50 * 1000:6.2f} ms  "
                    f"p99 {_p(times, 0.99) * 1000:6.2f} ms  ratio to 1 node {p50 / base:4.2f}"
                )
            floor_base = 0.0
            for count in (1, 3, 6):
                times = [_floor(targets[:count], _change(i, version)) for i in range(rounds)]
                p50 = statistics.median(times)
                floor_base = floor_base or p50
                print(
                    f"  floor, {count} node(s):      p50 {p50 * 1000:6.2f} ms  "
                    f"p99 {_p(times, 0.99) * 1000:6.2f} ms  ratio to 1 node {p50 / floor_base:4.2f}"
                )
            times = []
            for i in range(rounds):
                started = time.perf_counter()
                for target in targets:
                    engine.apply([target], [_change(i, version)])
                times.append(time.perf_counter() - started)
            p50 = statistics.median(times)
            print(
                f"  6 node(s) one by one:     p50 {p50 * 1000:6.2f} ms  "
                f"p99 {_p(times, 0.99) * 1000:6.2f} ms  ratio to 1 node {p50 / base:4.2f}"
            )
        finally:
            engine.close()
            manager.stop_all()


if __name__ == "__main__":
    main()
