"""Which worker supervises the local nodes: the one holding ``<data-dir>/supervisor.lock``.

With ``--workers N`` every worker serves requests, and any of them may
create, change or delete an instance's nodes (they share the data dir, as
they share the database). Exactly one of them, the holder of an exclusive
``flock`` on the lock file, does ``start_background``'s work: it brings the
local nodes up (adopting running ones), restarts a node that dies, and runs
the reconciler. The others try the lock every ``ELECTION_SECONDS``: the
kernel frees it the moment its holder dies, however it dies, and the next
worker to take it adopts the running nodes (a worker replaced by the
parent joins as a follower).

The supervising worker also follows what the others do, every
``FOLLOW_SECONDS`` (``LocalFollower``): a local instance another worker
built is put under supervision, a deleted one is let go, and a rotated
management password is taken up.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import threading
import time
from pathlib import Path

from sqlalchemy import select

from rkvstore.bootstrap import close_deps, finish_builds, start_background, stop_supervision
from rkvstore.services.context import Deps
from rkvstore.store import repo
from rkvstore.store.db import database_unavailable, describe_database_error
from rkvstore.store.tables import instances

log = logging.getLogger("rkvstore.workers")
LOCK_FILE = "supervisor.lock"
ELECTION_SECONDS = 0.5
FOLLOW_SECONDS = 1.0
ADOPT_RETRY_SECONDS = 30.0


class ServiceStopping:
    """One byte shared by the parent and its workers (an anonymous mapping made before
    the fork): set when the whole service stops, not when one worker does. Only then
    does the supervising worker stop the nodes (``RKVSTORE_STOP_NODES_ON_EXIT``): a
    worker that dies alone leaves them to its successor."""

    def __init__(self) -> None:
        self._flag = mmap.mmap(-1, 1)

    def set(self) -> None:
        self._flag[0] = 1

    def is_set(self) -> bool:
        return self._flag[0] == 1


class LocalFollower:
    """In the supervising worker: the nodes supervised follow the database."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._tokens: dict[str, str] = {}  # instance -> sealed management password seen
        self._foreign: set[str] = set()  # instances whose nodes another data dir holds
        self._retry_at: dict[str, float] = {}  # instance -> when to try adopting it again

    def follow_once(self) -> None:
        from rkvstore.services.instance_nodes import CREATING, LOCAL

        deps = self.deps
        # A narrow read (a few columns of the local instances: real processes, so
        # few), once a second; rows in full only for an instance new here.
        query = select(
            instances.c.instance_id, instances.c.status, instances.c.mgmt_password_encrypted
        ).where(instances.c.provider == LOCAL)
        with deps.engine.connect() as conn:
            listed = conn.execute(query).all()
            present = {row.instance_id for row in listed}
            # An instance being built is its builder's (perhaps this worker's) until Normal.
            tokens: dict[str, str] = {
                row.instance_id: row.mgmt_password_encrypted
                for row in listed
                if row.status != CREATING
            }
            supervised = deps.local.supervised_instances()
            new = {}
            for instance_id in sorted(tokens.keys() - supervised - self._foreign):
                instance = repo.get_instance_any_tenant(conn, instance_id)
                if instance is not None:
                    new[instance_id] = (instance, repo.list_nodes(conn, instance_id))
        self._foreign &= present
        for instance_id in supervised - present:
            deps.local.forget_instance(instance_id)  # deleted by another worker
            self._tokens.pop(instance_id, None)
            log.info("instance %s: deleted by another worker; no longer supervised", instance_id)
        for instance_id, (instance, rows) in new.items():
            if not rows or not deps.local.holds(instance, rows):
                self._foreign.add(instance_id)  # another rkvstore process's, on this database
                continue
            if time.monotonic() < self._retry_at.get(instance_id, 0.0):
                continue
            try:
                if not deps.local.resume_instance(instance, rows):
                    continue  # being deleted by another worker: looked at again next round
            except Exception:
                # Said once per try, tried again a while later (start_background at
                # the next start would fail the same way).
                log.exception("instance %s: adopting its nodes failed", instance_id)
                self._retry_at[instance_id] = time.monotonic() + ADOPT_RETRY_SECONDS
                continue
            self._retry_at.pop(instance_id, None)
            self._tokens[instance_id] = instance.mgmt_password_encrypted
            log.info("instance %s: built by another worker; its nodes supervised here", instance_id)
        for instance_id in supervised & tokens.keys():
            token = tokens[instance_id]
            if self._tokens.get(instance_id) != token:
                # Rotated (perhaps through another worker), or first seen here: restarts
                # and masterauth use the recorded one. Idempotent: a rotation of this
                # worker's own is applied once more.
                deps.local.manager.set_management_password(instance_id, deps.box.open(token))
                self._tokens[instance_id] = token


class SupervisorElection:
    """A worker's bid for supervision: ``start`` at its start, ``stop`` at its end."""

    def __init__(self, deps: Deps, stopping: ServiceStopping) -> None:
        self.deps = deps
        self.service_stopping = stopping
        self.path: Path = deps.settings.data_dir / LOCK_FILE
        self._fd: int | None = None
        self._stop = threading.Event()
        self._supervising = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def supervising(self) -> bool:
        return self._supervising.is_set()

    def start(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._thread = threading.Thread(target=self._run, name="supervisor-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop bidding; if supervising, stop supervising (the nodes too if the service stops)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)  # bounded: a takeover's start_background
        try:
            if self.supervising:
                stop_nodes = (
                    self.deps.settings.stop_nodes_on_exit and self.service_stopping.is_set()
                )
                stop_supervision(self.deps, stop_nodes=stop_nodes)
                log.info("worker %d: no longer supervising local nodes", os.getpid())
            else:
                finish_builds(self.deps)
                self.deps.reconciler.flags.stop()  # one last write of this worker's flags
            close_deps(self.deps)
        finally:
            if self._fd is not None:
                os.close(self._fd)  # frees the lock, once the nodes are stopped (or left)
                self._fd = None

    def _ending(self) -> bool:
        # The service stopping: the supervisor is stopping the nodes, and a worker
        # still draining its connections must not take over and start them again.
        return self._stop.is_set() or self.service_stopping.is_set()

    def _run(self) -> None:
        while not self._ending():
            if self._take_lock():
                break
            self._stop.wait(ELECTION_SECONDS)
        else:
            return
        if self._ending():
            return  # took it while stopping: nothing started, the lock goes with the fd
        log.info("worker %d supervises the local nodes and runs the reconciler", os.getpid())
        self._supervising.set()  # from here on, ``stop`` stops whatever started
        while True:
            try:
                start_background(self.deps)
                break
            except Exception:  # the database away, say: the lock stays, the start is tried again
                log.exception("starting supervision failed; trying again")
                if self._stop.wait(FOLLOW_SECONDS * 5):
                    return
        follower = LocalFollower(self.deps)
        failing = False
        while not self._stop.wait(FOLLOW_SECONDS):
            try:
                follower.follow_once()
            except Exception as exc:  # the next round tries again; said once per outage
                if not failing:
                    log.warning(
                        "following the other workers' instances failed (%s); retrying",
                        describe_database_error(exc),
                        exc_info=not database_unavailable(exc),  # a bug: its traceback, once
                    )
                failing = True
                continue
            if failing:
                log.info("following the other workers' instances again")
            failing = False

    def _take_lock(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
