"""The local provider: an instance's rows in the database become redis-server processes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from rkvstore.crypto import SecretBox
from rkvstore.engine.acl import DesiredUser
from rkvstore.engine.binary import RedisBinary, binary_for, find_binaries
from rkvstore.engine.cluster import Member, form_cluster
from rkvstore.engine.local import LocalNode, LocalNodeManager
from rkvstore.engine.localfiles import CONF_FILE, with_parameters, write_private
from rkvstore.store.repo import InstanceRow, NodeRow

log = logging.getLogger("rkvstore.local")


def acl_file_line(user: DesiredUser) -> str:
    hashes = [f"#{sha}" for sha in user.password_hashes()]
    return " ".join(["user", user.name, "on", *hashes, *user.rules])


class LocalProvider:
    def __init__(self, root: Path, box: SecretBox, configured_binary: Path | None) -> None:
        self.box = box
        self.binaries: list[RedisBinary] = find_binaries(configured_binary)
        self.manager = LocalNodeManager(root)

    def binary_for(self, engine_version: str | None) -> RedisBinary | None:
        return binary_for(self.binaries, engine_version)

    def allocate_ports(
        self, count: int, *, cluster: bool = False, avoid: frozenset[int] = frozenset()
    ) -> list[int]:
        """``count`` free ports, none of them in ``avoid`` (ports the database records)."""
        return [self.manager.allocate_port(cluster=cluster, avoid=avoid) for _ in range(count)]

    def release_ports(self, ports: Sequence[int]) -> None:
        for port in ports:
            self.manager.release_port(port)

    def _nodes(self, instance: InstanceRow, rows: Sequence[NodeRow]) -> list[LocalNode]:
        binary = self.binary_for(instance.engine_version)
        if binary is None:
            raise RuntimeError(f"no redis-server binary for engine {instance.engine_version}")
        ports = {r.node_id: r.port for r in rows}
        return [
            LocalNode(
                instance_id=instance.instance_id,
                node_id=r.node_id,
                port=r.port,
                role="master" if r.role == "master" else "replica",
                master_port=ports.get(r.master_node_id) if r.master_node_id else None,
                binary=binary,
                cluster=instance.architecture == "cluster",
            )
            for r in rows
        ]

    def start_instance(
        self, instance: InstanceRow, rows: Sequence[NodeRow], desired: Sequence[DesiredUser]
    ) -> None:
        """Create and start every node, masters first, and put them under supervision."""
        mgmt = self.box.open(instance.mgmt_password_encrypted)
        lines = [acl_file_line(u) for u in desired if u.name != "rkvstore_mgmt"]
        nodes = sorted(self._nodes(instance, rows), key=lambda n: n.role != "master")
        for node in nodes:
            self.manager.create(node, mgmt, lines)
            self.manager.watch(node, mgmt)
        if instance.architecture == "cluster":
            shard_of = {r.node_id: r.shard for r in rows}
            members = {Member("127.0.0.1", n.port, n.role, shard_of[n.node_id]): n for n in nodes}
            form_cluster(
                list(members),
                lambda member: self.manager.client(members[member], mgmt, timeout=5.0),
            )

    def holds(self, instance: InstanceRow, rows: Sequence[NodeRow]) -> bool:
        """Whether this data dir holds the instance's nodes (the process that created it)."""
        return all(self.manager.node_dir(n).exists() for n in self._nodes(instance, rows))

    def write_parameters(
        self, instance: InstanceRow, rows: Sequence[NodeRow], values: Mapping[str, str]
    ) -> dict[Path, str]:
        """``values`` into every node's redis.conf, so that a restart keeps them.

        Returns each file's text before, for ``restore_files``; on an error the
        files already written are restored and the error raised.
        """
        before: dict[Path, str] = {}
        try:
            for node in self._nodes(instance, rows):
                path = self.manager.node_dir(node) / CONF_FILE
                text = path.read_text(encoding="utf-8")
                write_private(path, with_parameters(text, values))
                before[path] = text
        except OSError:
            self.restore_files(before)
            raise
        return before

    def restore_files(self, before: Mapping[Path, str]) -> None:
        for path, text in before.items():
            try:
                write_private(path, text)
            except OSError as exc:
                log.error("could not restore %s: %s", path, exc)

    def resume_instance(self, instance: InstanceRow, rows: Sequence[NodeRow]) -> bool:
        """Adopt nodes still running from an earlier run (or worker), start the others;
        ``False`` when the instance is being deleted (its lock taken, its files gone)."""
        mgmt = self.box.open(instance.mgmt_password_encrypted)
        nodes = sorted(self._nodes(instance, rows), key=lambda n: n.role != "master")
        return self.manager.adopt_instance(nodes, mgmt)

    def delete_instance(self, instance: InstanceRow, rows: Sequence[NodeRow]) -> None:
        nodes = self._nodes(instance, rows)
        for node in nodes:
            self.manager.unwatch(node.node_id)
        self.manager.delete_instance(instance.instance_id, nodes)

    def supervised_instances(self) -> set[str]:
        return self.manager.watched_instances()

    def forget_instance(self, instance_id: str) -> None:
        """Another process deleted it: neither supervise nor stop its nodes here."""
        self.manager.forget_instance(instance_id)

    def start(self) -> None:
        self.manager.start_supervisor()

    def stop(self, stop_nodes: bool) -> None:
        self.manager.stop_supervisor()
        if stop_nodes:
            self.manager.stop_all()
