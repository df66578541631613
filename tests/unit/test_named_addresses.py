"""What a verify reads from a deployment's nodes to tell whether it names a node not on the list."""

from __future__ import annotations

import redis

from rkvstore.engine.discovery import named_addresses

MASTER = (
    b"# Replication\r\nrole:master\r\nconnected_slaves:2\r\n"
    b"slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n"
    b"slave1:ip=::1,port=7002,state=online,offset=42,lag=1\r\n"
    b"master_failover_state:no-failover\r\n"
)
REPLICA = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\n"
CLUSTER = (
    "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191\n"
    "b2 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n"
    "c3 127.0.0.1:7002@17002 slave a1 0 0 1 connected\n"
)


def test_a_master_names_its_replicas_and_a_replica_its_master() -> None:
    assert named_addresses([[MASTER], [REPLICA]], cluster=False) == {
        ("127.0.0.1", 7001),
        ("::1", 7002),
        ("127.0.0.1", 7000),
    }
    lone = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
    assert named_addresses([[lone]], cluster=False) == set()
    assert named_addresses([], cluster=False) == set()  # no node answered: nothing to add


def test_a_cluster_names_its_masters_serving_slots_and_their_replicas() -> None:
    assert named_addresses([[CLUSTER]], cluster=True) == {
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
        ("127.0.0.1", 7002),
    }


def test_a_reply_not_understood_asks_for_the_whole_look() -> None:
    assert named_addresses([[redis.ResponseError("NOPERM")]], cluster=False) is None
    assert named_addresses([["role:slave\r\nmaster_host:x\r\n"]], cluster=False) is None
    assert named_addresses([["role:master\r\nslave0:port=1\r\n"]], cluster=False) is None
    assert named_addresses([["no cluster here"]], cluster=True) is None
    assert named_addresses([[MASTER, REPLICA]], cluster=False) is None


def test_a_cluster_is_read_from_the_first_node_that_answers_as_discover_does() -> None:
    nobody = "d4 :0@0 myself,master,noaddr - 0 0 0 connected\n"
    views = [
        [redis.ConnectionError("gone")],
        [nobody],
        [CLUSTER],
        ["e5 10.0.0.9:1@2 master - 0 0 1 connected 0"],
    ]
    assert named_addresses(views, cluster=True) == {
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
        ("127.0.0.1", 7002),
    }
    assert named_addresses([[nobody]], cluster=True) is None
    assert named_addresses([], cluster=True) == set()
