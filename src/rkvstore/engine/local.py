"""The local provider: real redis-server processes under the data dir.

Each node lives in ``<root>/<instance_id>/<node_id>/`` with its redis.conf,
ACL file, AOF/RDB, log and pidfile, and keeps its port for life. The manager
starts nodes, adopts ones left running by an earlier rkvstore process,
restarts watched ones that die, and stops them gracefully.

Every node, whatever its role, gets ``masterauth`` (the management password)
with CONFIG SET after each start, restart and adoption: a master becomes a
replica after a failover, and the password is never written to a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis
from redis.exceptions import AuthenticationError, BusyLoadingError

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine import bounded
from rkvstore.engine.localfiles import (
    ACL_FILE,
    CLUSTER_BUS_OFFSET,
    CONF_FILE,
    LOG_FILE,
    PID_FILE,
    LocalNode,
    accept_management_password,
    check_path_component,
    configured_port,
    configured_ports,
    minimal_acl_file,
    read_pidfile,
    render_acl_file,
    render_config,
    write_private,
)
from rkvstore.engine.localproc import (
    KILL_WAIT,
    POLL,
    LocalNodeError,
    default_port_range,
    is_node_process,
    log_tail,
    pid_alive,
    port_free,
    terminate_pid,
)
from rkvstore.engine.portclaims import PortClaims
from rkvstore.secret import Secret

__all__ = ["MANAGEMENT_USER", "LocalNode", "LocalNodeError", "LocalNodeManager"]

logger = logging.getLogger(__name__)

_MAX_BACKOFF: Final = 30.0
# What ``_instance_dir_lock`` found.
_LOCKED: Final = "locked"
_GONE: Final = "gone"
_BUSY: Final = "busy"
# What a redis-server needs from the environment; rkvstore's own keys stay out of it.
_CHILD_ENV: Final = ("PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH", "HOME")


@dataclass
class _Running:
    node: LocalNode
    pid: int
    process: subprocess.Popen[bytes] | None  # None: adopted from an earlier rkvstore run
    conf: Path
    masterauth_pending: bool = False  # adopted while silent: the supervisor sets it later

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None  # also reaps it
        return pid_alive(self.pid) and is_node_process(self.pid, self.node.port, self.conf)

    def describe_exit(self) -> str:
        if self.process is not None and self.process.returncode is not None:
            return f"process {self.pid} exited with code {self.process.returncode}"
        return f"process {self.pid} is gone"


@dataclass
class _Watched:
    node: LocalNode
    mgmt_password: Secret
    failures: int = 0
    next_attempt: float = 0.0


class LocalNodeManager:
    """Starts, supervises, adopts and stops the redis-server processes under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        check_interval: float = 1.0,
        start_timeout: float = 15.0,
        link_timeout: float = 15.0,
        port_range: tuple[int, int] | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.host = host
        self.check_interval = check_interval
        self.start_timeout = start_timeout
        self.link_timeout = link_timeout
        self.port_range = port_range or default_port_range()
        self._lock = threading.RLock()  # guards the dicts below, never held while waiting
        self._node_locks: dict[str, threading.Lock] = {}  # one operation per node at a time
        self._running: dict[str, _Running] = {}
        self._watched: dict[str, _Watched] = {}
        # allocated port -> the ports it holds until its node is created (itself, its bus port)
        self._reserved_ports: dict[int, set[int]] = {}
        self._claims = PortClaims()  # the same, against other processes on this host
        self._stop_event = threading.Event()
        self._supervisor: threading.Thread | None = None
        # Told the instance of every node restarted (the reconciler: a pass soon,
        # for what the node's files did not keep).
        self.on_restart: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ paths and ports

    def node_dir(self, node: LocalNode) -> Path:
        return self.root / node.instance_id / node.node_id

    def allocate_port(self, *, cluster: bool = False, avoid: frozenset[int] = frozenset()) -> int:
        """A free loopback port that no node under ``root`` uses (nor its cluster bus).

        Picked in ``port_range``, which by default lies below the kernel's
        ephemeral range, so that an outgoing connection cannot take a dead
        node's port before it restarts. With ``cluster``, port + 10000 (the
        cluster bus) must be free and in ``port_range`` too. The port stays
        reserved until a node is created on it or ``release_port``.
        """
        low, high = self.port_range
        top = min(high, 65535) - (CLUSTER_BUS_OFFSET if cluster else 0)
        if top < low:
            raise LocalNodeError(
                f"the port range {low}-{high} has no room for a cluster bus port (port + 10000)"
            )
        with self._lock:
            taken = self._ports_under_root().union(*self._reserved_ports.values(), avoid)
            for port in random.sample(range(low, top + 1), min(500, top + 1 - low)):
                held = {port, port + CLUSTER_BUS_OFFSET} if cluster else {port}
                if held & taken or not all(port_free(self.host, p) for p in held):
                    continue
                if not self._claim_all(held):
                    continue  # another process on this host picked it a moment ago
                self._reserved_ports[port] = held
                return port
        what = "port with a free bus port" if cluster else "port"
        raise LocalNodeError(f"no free {what} in {low}-{high} on {self.host}")

    def release_port(self, port: int) -> None:
        """Give back a port from ``allocate_port`` that no node was created on."""
        self._unreserve(port)

    def _claim_all(self, ports: set[int]) -> bool:
        claimed = [p for p in sorted(ports) if self._claims.claim(p)]
        if len(claimed) == len(ports):
            return True
        for port in claimed:
            self._claims.release(port)
        return False

    def _unreserve(self, port: int) -> None:
        """The port's node listens (or never will): other processes may pick it again."""
        with self._lock:
            held = self._reserved_ports.pop(port, set())
        for p in held:
            self._claims.release(p)

    def _ports_under_root(self) -> set[int]:
        return set().union(*(configured_ports(c) for c in self.root.glob(f"*/*/{CONF_FILE}")))

    # ------------------------------------------------------------------ connections

    def client(self, node: LocalNode, mgmt_password: Secret, timeout: float = 2.0) -> redis.Redis:
        """A management connection (user ``rkvstore_mgmt``, ``decode_responses=True``, no retries).

        Close it after use (``with manager.client(...) as conn:``).
        """
        return bounded.client(
            self.host,
            node.port,
            username=MANAGEMENT_USER,
            password=mgmt_password.reveal(),
            timeout=timeout,
            decode_responses=True,
        )

    # ------------------------------------------------------------------ lifecycle

    def create(self, node: LocalNode, mgmt_password: Secret, initial_acl: list[str]) -> None:
        """Write a new node's files, start it, and wait until it serves (a replica: is in sync).

        A cluster node (``node.cluster``) is only started: it answers with
        ``cluster_state:fail`` until engine/cluster.py forms the cluster, and a
        cluster replica gets its master from CLUSTER REPLICATE then.

        ``initial_acl`` holds full ACL-file lines (``user <name> on #<sha256> ...``);
        the management user is added here. On failure the process is stopped and
        the files are left for ``delete_instance``.
        """
        acl_text = render_acl_file(mgmt_password, initial_acl)
        node_dir = self.node_dir(node)
        if (node_dir / CONF_FILE).exists():
            raise LocalNodeError(f"node {node.node_id} already exists")
        node_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(node_dir / ACL_FILE, acl_text)
        write_private(node_dir / CONF_FILE, render_config(node, node_dir, self.host))
        with self._node_lock(node.node_id):
            running = self._start(node, mgmt_password)
            try:
                if node.role == "replica" and not node.cluster:
                    self._wait_link_up(node, mgmt_password)
            except BaseException:
                self._forget(node.node_id)
                _terminate(running, KILL_WAIT)
                raise
        self._unreserve(node.port)
        logger.info(
            "started node %s of %s on port %d (pid %d, Redis %s)",
            node.node_id,
            node.instance_id,
            node.port,
            running.pid,
            node.binary.version,
        )

    def ensure_running(self, node: LocalNode, mgmt_password: Secret) -> None:
        """Adopt the node's process if one is alive on its port, else start it from its files."""
        with self._node_lock(node.node_id):
            self._ensure_running(node, mgmt_password)

    def _ensure_running(self, node: LocalNode, mgmt_password: Secret) -> _Running:
        with self._lock:
            known = self._running.get(node.node_id)
        if known is not None and known.alive():
            return known
        pid = self._find_live_process(node, mgmt_password)
        if pid is not None:
            running = _Running(node, pid, None, self.node_dir(node) / CONF_FILE)
            with self._lock:
                self._running[node.node_id] = running
            try:
                self._apply_masterauth(node, mgmt_password)
            except LocalNodeError as exc:
                # Alive but silent (stopped, loading, shutting down): the supervisor
                # sets it once the node answers; the node's earlier masterauth stays.
                running.masterauth_pending = True
                logger.warning("node %s: %s; retrying when it answers", node.node_id, exc)
            logger.info("adopted node %s on port %d (pid %d)", node.node_id, node.port, pid)
            return running
        running = self._start(node, mgmt_password)
        logger.info("started node %s on port %d (pid %d)", node.node_id, node.port, running.pid)
        return running

    def stop(self, node: LocalNode, timeout: float = 10) -> None:
        """Stop a node gracefully (SIGTERM: Redis saves), SIGKILL after ``timeout``."""
        self.unwatch(node.node_id)
        with self._node_lock(node.node_id):
            running = self._forget(node.node_id)
            if running is None or not running.alive():
                running = self._stray_process(node)
            if running is not None:
                _terminate(running, timeout)
                logger.info("stopped node %s on port %d", node.node_id, node.port)

    def stop_all(self) -> None:
        """Stop every watched or started node, in parallel (for rkvstore's shutdown)."""
        with self._lock:
            nodes = {w.node.node_id: w.node for w in self._watched.values()}
            nodes.update({r.node.node_id: r.node for r in self._running.values()})
            self._watched.clear()
        self._for_each(self.stop, list(nodes.values()))

    def delete_instance(self, instance_id: str, nodes: list[LocalNode]) -> None:
        """Stop the instance's nodes and remove all its files."""
        check_path_component(instance_id, "instance id")
        with self._lock:
            known = [r.node for r in self._running.values() if r.node.instance_id == instance_id]
        targets = {n.node_id: n for n in [*known, *nodes]}
        # Under the instance's lock: the process supervising the nodes (another
        # worker on this data dir) restarts none of them meanwhile.
        with self._instance_dir_lock(instance_id, wait=self.start_timeout + KILL_WAIT) as state:
            if state == _BUSY:
                logger.warning(
                    "instance %s: its lock stays taken; deleting all the same", instance_id
                )
            self._for_each(self.stop, list(targets.values()))
            instance_dir = self.root / instance_id
            # A process of this instance nobody told us about (an earlier run's) goes too.
            for pidfile in instance_dir.glob(f"*/{PID_FILE}"):
                self._stop_stray(pidfile.parent)
            if instance_dir.exists():
                shutil.rmtree(instance_dir)
        for node in targets.values():
            self._unreserve(node.port)
        logger.info("deleted the local files of %s", instance_id)

    # ------------------------------------------------------------------ supervision

    def watch(self, node: LocalNode, mgmt_password: Secret) -> None:
        """Supervise a node; calling it again replaces the node or the management password."""
        with self._lock:
            self._watched[node.node_id] = _Watched(node, mgmt_password)

    def set_management_password(
        self, instance_id: str, new: Secret, *, timeout: float = 5.0
    ) -> None:
        """Rotate the management password the manager uses for an instance's nodes.

        Every watched node of the instance is restarted with ``new`` from now on,
        and every running node of the instance gets ``CONFIG SET masterauth <new>``
        (connecting with ``new``), so that replicas authenticate to their masters
        with it on their next sync. The caller must already have added ``new`` to
        the management user on every node (and keep the old password until this
        returns); its ACL file should hold it too (ACL SAVE), although a restart
        adds it to the file if it is missing.

        All nodes are done concurrently, each within about ``timeout`` seconds
        (waiting for an operation on the node, such as a restart, included).
        Raises ``LocalNodeError`` naming the nodes that failed; the watched
        entries hold ``new`` all the same and the nodes that succeeded use it:
        call again with the old password to go back.
        """
        check_path_component(instance_id, "instance id")
        with self._lock:
            nodes: dict[str, LocalNode] = {}
            for entry in self._watched.values():
                if entry.node.instance_id == instance_id:
                    entry.mgmt_password = new
                    nodes[entry.node.node_id] = entry.node
            for running in self._running.values():
                if running.node.instance_id == instance_id:
                    nodes.setdefault(running.node.node_id, running.node)
        if not nodes:
            return
        failed: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
            futures = {
                node_id: pool.submit(self._rotate_masterauth, node, new, timeout)
                for node_id, node in nodes.items()
            }
            for node_id, future in futures.items():
                try:
                    future.result()
                except LocalNodeError as exc:
                    failed[node_id] = str(exc)
        if failed:
            details = "; ".join(f"{node_id}: {why}" for node_id, why in sorted(failed.items()))
            raise LocalNodeError(
                f"the management password of {instance_id} is not in use on "
                f"{len(failed)} of {len(nodes)} nodes ({details})"
            )
        logger.info(
            "management password of %s in use on %d nodes (masterauth set)",
            instance_id,
            len(nodes),
        )

    def _rotate_masterauth(self, node: LocalNode, new: Secret, timeout: float) -> None:
        node_lock = self._node_lock(node.node_id)
        if not node_lock.acquire(timeout=timeout):
            raise LocalNodeError(f"busy with another operation for {timeout:.0f} s")
        try:
            with self._lock:
                running = self._running.get(node.node_id)
            if running is None or not running.alive():
                return  # not running: its next start (the supervisor's) uses the new one
            self._apply_masterauth(node, new, timeout=timeout)
            running.masterauth_pending = False
        finally:
            node_lock.release()

    def unwatch(self, node_id: str) -> None:
        with self._lock:
            self._watched.pop(node_id, None)

    def watched_instances(self) -> set[str]:
        """The instances with nodes under supervision here."""
        with self._lock:
            return {w.node.instance_id for w in self._watched.values()}

    def adopt_instance(self, nodes: Sequence[LocalNode], mgmt_password: Secret) -> bool:
        """Adopt (or start) an instance's nodes and supervise them, under the instance's
        lock: ``False`` when another process holds it (deleting the instance) or the
        instance's files are gone — a deletion and an adoption never interleave."""
        if not nodes:
            return True
        instance_id = nodes[0].instance_id
        with self._instance_dir_lock(instance_id, wait=0) as state:
            if state != _LOCKED or not all((self.node_dir(n) / CONF_FILE).exists() for n in nodes):
                return False
            for node in nodes:
                self.ensure_running(node, mgmt_password)
                self.watch(node, mgmt_password)
        return True

    def forget_instance(self, instance_id: str) -> None:
        """Neither supervise nor stop the instance's nodes any more (another process deleted it)."""
        with self._lock:
            for node_id in [
                k for k, w in self._watched.items() if w.node.instance_id == instance_id
            ]:
                del self._watched[node_id]
            for node_id in [
                k for k, r in self._running.items() if r.node.instance_id == instance_id
            ]:
                del self._running[node_id]

    @contextlib.contextmanager
    def _instance_dir_lock(self, instance_id: str, *, wait: float) -> Iterator[str]:
        """An exclusive lock (flock) on the instance's directory, which every process on this
        data dir sees: ``_LOCKED``; ``_GONE`` when the directory is not (or no longer)
        there; ``_BUSY`` when another holder kept it ``wait`` seconds."""
        path = self.root / instance_id
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            yield _GONE
            return
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield _BUSY
                        return
                    time.sleep(POLL)
            yield _LOCKED if path.exists() else _GONE
        finally:
            os.close(fd)  # releases the lock

    def start_supervisor(self) -> None:
        with self._lock:
            if self._supervisor is not None and self._supervisor.is_alive():
                return
            self._stop_event.clear()
            self._supervisor = threading.Thread(
                target=self._supervise, name="rkvstore-node-supervisor", daemon=True
            )
            self._supervisor.start()

    def stop_supervisor(self) -> None:
        self._stop_event.set()
        thread, self._supervisor = self._supervisor, None
        if thread is not None:
            thread.join(timeout=self.start_timeout + self.check_interval + 5)

    def check_watched(self) -> list[str]:
        """One supervision pass: restart every watched node whose process is gone.

        Returns the ids of the nodes restarted. A node another operation holds is
        skipped this time; one whose restart failed is retried with a backoff.
        """
        with self._lock:
            watched = list(self._watched.values())
        restarted: list[str] = []
        for entry in watched:
            if self._stop_event.is_set() or time.monotonic() < entry.next_attempt:
                continue
            node_lock = self._node_lock(entry.node.node_id)
            if not node_lock.acquire(blocking=False):
                continue
            try:
                if self._restart_if_dead(entry):
                    restarted.append(entry.node.node_id)
                entry.failures = 0
            except Exception as exc:
                entry.failures += 1
                delay = min(_MAX_BACKOFF, self.check_interval * 2**entry.failures)
                entry.next_attempt = time.monotonic() + delay
                logger.error(
                    "restarting node %s on port %d failed (attempt %d, next in %.0f s): %s",
                    entry.node.node_id,
                    entry.node.port,
                    entry.failures,
                    delay,
                    exc,
                )
            finally:
                node_lock.release()
        return restarted

    def _supervise(self) -> None:
        while not self._stop_event.wait(self.check_interval):
            try:
                self.check_watched()
            except Exception:  # the supervisor must outlive any one bad pass
                logger.exception("node supervision pass failed")

    def _restart_if_dead(self, entry: _Watched) -> bool:
        node = entry.node
        with self._lock:
            if self._watched.get(node.node_id) is not entry:
                return False  # unwatched or replaced meanwhile
            running = self._running.get(node.node_id)
        if running is not None and running.alive():
            if running.masterauth_pending:
                self._retry_masterauth(running, entry.mgmt_password)
            return False
        with self._instance_dir_lock(node.instance_id, wait=0) as state:
            if state == _BUSY:
                return False  # another process is deleting the instance: next pass
            if state == _GONE or not (self.node_dir(node) / CONF_FILE).exists():
                # Deleted by another process on this data dir (another worker).
                self.forget_instance(node.instance_id)
                logger.info(
                    "instance %s: deleted elsewhere; no longer supervised", node.instance_id
                )
                return False
            reason = running.describe_exit() if running is not None else "not running"
            logger.warning(
                "node %s of %s on port %d: %s; restarting",
                node.node_id,
                node.instance_id,
                node.port,
                reason,
            )
            new = self._ensure_running(node, entry.mgmt_password)
        logger.warning("node %s is back on port %d (pid %d)", node.node_id, node.port, new.pid)
        if self.on_restart is not None:
            self.on_restart(node.instance_id)
        return True

    # ------------------------------------------------------------------ internals

    def _node_lock(self, node_id: str) -> threading.Lock:
        with self._lock:
            return self._node_locks.setdefault(node_id, threading.Lock())

    def _forget(self, node_id: str) -> _Running | None:
        with self._lock:
            return self._running.pop(node_id, None)

    def _for_each(self, action: Callable[[LocalNode], None], nodes: list[LocalNode]) -> None:
        if not nodes:
            return
        with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
            for future in [pool.submit(action, n) for n in nodes]:
                future.result()

    def _start(self, node: LocalNode, mgmt_password: Secret) -> _Running:
        """Start the process from the node's files and wait until it answers the management user."""
        node_dir = self.node_dir(node)
        conf = node_dir / CONF_FILE
        if not conf.is_file():
            raise LocalNodeError(f"node {node.node_id} has no {CONF_FILE} under {node_dir}")
        self._prepare_acl_file(node, mgmt_password)
        with (node_dir / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(
                [str(node.binary.path), str(conf)],
                cwd=node_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to rkvstore must not reach Redis
                env={k: v for k in _CHILD_ENV if (v := os.environ.get(k)) is not None},
            )
        running = _Running(node, process.pid, process, conf)
        with self._lock:
            self._running[node.node_id] = running
        try:
            self._wait_ready(running, mgmt_password)
            self._apply_masterauth(node, mgmt_password)
        except BaseException:
            self._forget(node.node_id)
            _terminate(running, KILL_WAIT)
            raise
        return running

    def _wait_ready(self, running: _Running, mgmt_password: Secret) -> None:
        node = running.node
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not running.alive():
                tail = log_tail(self.node_dir(node) / LOG_FILE)
                raise LocalNodeError(
                    f"redis-server for node {node.node_id} {running.describe_exit()}: {tail}"
                )
            try:
                with self.client(node, mgmt_password, timeout=0.5) as conn:
                    conn.ping()
                return
            except AuthenticationError as exc:
                raise LocalNodeError(
                    f"node {node.node_id} refuses the management user: {exc}"
                ) from None
            except (redis.ConnectionError, redis.TimeoutError):  # also LOADING
                pass
            if time.monotonic() > deadline:
                raise LocalNodeError(
                    f"node {node.node_id} did not answer on port {node.port} "
                    f"within {self.start_timeout:.0f} s"
                )
            time.sleep(POLL)

    def _prepare_acl_file(self, node: LocalNode, mgmt_password: Secret) -> None:
        """Make sure the ACL file exists and lets the management user in, before a start.

        Redis refuses to start with a configured aclfile that does not exist
        (6.2 and 7.x); one that is empty would leave ``default`` open. Either is
        replaced by the management user and ``default off``: the reconciler puts
        the accounts back.
        """
        path = self.node_dir(node) / ACL_FILE
        try:
            text: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = None
        except (OSError, UnicodeDecodeError) as exc:
            raise LocalNodeError(
                f"node {node.node_id}: cannot read its ACL file: {type(exc).__name__}"
            ) from None
        if text is None or not text.strip():
            write_private(path, minimal_acl_file(mgmt_password))
            logger.warning(
                "node %s: ACL file missing; started with the management user only; "
                "the reconciler restores its accounts",
                node.node_id,
            )
            return
        fixed = accept_management_password(text, mgmt_password)
        if fixed != text:
            write_private(path, fixed)
            logger.warning(
                "node %s: its ACL file did not accept the current management password; "
                "added it to the management user",
                node.node_id,
            )

    def _apply_masterauth(
        self, node: LocalNode, mgmt_password: Secret, timeout: float = 2.0
    ) -> None:
        """masteruser/masterauth for the node's next sync with a master (any role: failovers).

        The plaintext goes to Redis's memory only: no file ever holds it.
        """
        try:
            with self.client(node, mgmt_password, timeout=timeout) as conn:
                conn.config_set("masteruser", MANAGEMENT_USER)
                conn.config_set("masterauth", mgmt_password.reveal())
        except AuthenticationError:
            raise LocalNodeError(f"node {node.node_id} refuses the management password") from None
        except (redis.RedisError, OSError) as exc:
            raise LocalNodeError(
                f"setting masterauth on node {node.node_id} failed: {type(exc).__name__}"
            ) from None

    def _retry_masterauth(self, running: _Running, mgmt_password: Secret) -> None:
        try:
            self._apply_masterauth(running.node, mgmt_password, timeout=0.5)
        except LocalNodeError:
            return  # still silent: next pass
        running.masterauth_pending = False
        logger.info("node %s answers again; masterauth set", running.node.node_id)

    def _wait_link_up(self, node: LocalNode, mgmt_password: Secret) -> None:
        deadline = time.monotonic() + self.link_timeout
        status = "unknown"
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                with self.client(node, mgmt_password) as conn:
                    status = str(conn.info("replication").get("master_link_status", "unknown"))
                if status == "up":
                    return
            time.sleep(POLL * 2)
        raise LocalNodeError(
            f"replica {node.node_id} has no link to its master on port {node.master_port} "
            f"after {self.link_timeout:.0f} s (status {status})"
        )

    def _find_live_process(self, node: LocalNode, mgmt_password: Secret) -> int | None:
        """The pid of this node's redis-server if one is alive, else ``None``."""
        conf = self.node_dir(node) / CONF_FILE
        try:
            with self.client(node, mgmt_password) as conn:
                info = conn.info("server")
        except AuthenticationError:
            raise LocalNodeError(
                f"port {node.port} answers but refuses rkvstore's management user"
            ) from None
        except BusyLoadingError:
            stray = self._stray_process(node)
            return stray.pid if stray is not None else None
        except (redis.ConnectionError, redis.TimeoutError):
            stray = self._stray_process(node)
            if stray is None:
                return None
            # Alive but silent (stopped, or shutting down): adopt it, the supervisor
            # restarts it if it exits; starting a second one would fail to bind.
            logger.warning(
                "node %s: process %d holds port %d but does not answer",
                node.node_id,
                stray.pid,
                node.port,
            )
            return stray.pid
        served = str(info.get("config_file") or "")
        if served and Path(served).resolve() != conf.resolve():
            raise LocalNodeError(f"port {node.port} is held by another redis-server ({served})")
        return int(info["process_id"])

    def _stray_process(self, node: LocalNode) -> _Running | None:
        conf = self.node_dir(node) / CONF_FILE
        pid = read_pidfile(self.node_dir(node) / PID_FILE)
        if pid is None or not pid_alive(pid) or not is_node_process(pid, node.port, conf):
            return None
        return _Running(node, pid, None, conf)

    def _stop_stray(self, node_dir: Path) -> None:
        conf = node_dir / CONF_FILE
        port = configured_port(conf)
        pid = read_pidfile(node_dir / PID_FILE)
        if port is None or pid is None or not pid_alive(pid):
            return
        if is_node_process(pid, port, conf):
            logger.warning("stopping a redis-server left running in %s (pid %d)", node_dir, pid)
            terminate_pid(pid, lambda: pid_alive(pid), f"the process in {node_dir}", 10.0)


def _terminate(running: _Running, timeout: float) -> None:
    terminate_pid(running.pid, running.alive, f"node {running.node.node_id}", timeout)
