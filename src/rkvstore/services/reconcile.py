"""Keeps every node in line with the database: drift, late commands, restarted nodes.

A pass over an instance holds its task slot (action ``Reconcile``) so that it
never races a change in flight; callers who meet it wait for it like for any
task. Passes run on a pool shared fairly between tenants: one tenant's
instances whose nodes stall hold at most ``PASSES_PER_TENANT`` workers.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from contextlib import ExitStack

from sqlalchemy.exc import SQLAlchemyError

from rkvstore.engine import bounded
from rkvstore.engine.redis_engine import ReconcileReport
from rkvstore.errors import ApiError
from rkvstore.services.context import Deps
from rkvstore.services.fair import FairPool
from rkvstore.services.tasks import RECONCILE
from rkvstore.store import repo
from rkvstore.store.db import database_unavailable, describe_database_error

log = logging.getLogger("rkvstore.reconcile")

# A flagged instance whose slot a task held when the pass came (often the very
# task that flagged it) is tried again this soon, not an interval later.
RETRY_BUSY_SECONDS = 0.2
# Instances passed over at once, and at most this many of one tenant's.
PASS_WORKERS = 8
PASSES_PER_TENANT = 2
# ``mark_dirty`` without an account: the whole instance.
_ALL = "*"


class _Busy(Exception):
    """A task holds the instance's slot."""


class Reconciler:
    def __init__(self, deps: Deps, interval: float) -> None:
        self.deps = deps
        self.interval = interval
        self._out_of_line: dict[str, set[str]] = {}
        # instance -> the accounts a failed change may have left out of line (_ALL: all)
        self._dirty: dict[str, set[str]] = {}
        self._flagged: dict[str, int] = {}  # instance -> times mark_dirty was called
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._passes = FairPool(PASS_WORKERS, PASSES_PER_TENANT, "reconcile")
        self._in_flight: set[str] = set()  # instances with a pass queued or running
        self._database_down = False  # logged once per outage, not once per pass

    # ------------------------------------------------------------------ state for Describe*

    def in_line(self, instance_id: str, account: str | None = None) -> bool:
        """Every node reached and nothing flagged; with ``account``: nothing flagged for it."""
        with self._lock:
            if self._out_of_line.get(instance_id):
                return False
            dirty = self._dirty.get(instance_id)
            if not dirty:
                return True
            return account is not None and _ALL not in dirty and account not in dirty

    def mark_dirty(self, instance_id: str, account: str | None = None) -> None:
        """A change may have left ``account`` (None: any account) out of line: pass soon."""
        with self._lock:
            self._dirty.setdefault(instance_id, set()).add(account or _ALL)
            self._flagged[instance_id] = self._flagged.get(instance_id, 0) + 1
        self._wake.set()

    def forget(self, instance_id: str) -> None:
        with self._lock:
            self._out_of_line.pop(instance_id, None)
            self._dirty.pop(instance_id, None)
            self._flagged.pop(instance_id, None)

    # ------------------------------------------------------------------ passes

    def reconcile_instance(
        self, instance_id: str, *, holding_slot: bool = False
    ) -> ReconcileReport | None:
        """One pass over one instance; ``None`` when it is busy or not ``Normal``."""
        try:
            return self._reconcile(instance_id, holding_slot)
        except _Busy:  # a task is running: it brings the nodes in line itself
            return None

    def _reconcile(self, instance_id: str, holding_slot: bool) -> ReconcileReport | None:
        if self._normal(instance_id) is None:
            return None
        with ExitStack() as slot:
            if not holding_slot:
                try:
                    slot.enter_context(self.deps.slots.hold(instance_id, RECONCILE, wait=0))
                except ApiError as exc:
                    raise _Busy(instance_id) from exc
            # Read again under the slot: what a task recorded just before it was
            # released (a new password, a rotated management login) is what the
            # nodes must match, not what was read before.
            instance = self._normal(instance_id)
            if instance is None:
                return None
            with self._lock:
                flagged = self._flagged.get(instance_id, 0)
            report = self._pass(instance)
            # Still under the slot, so no task's failure can be flagged in between
            # and then wiped here; a flag raised during the pass stays for the next.
            with self._lock:
                before = self._out_of_line.get(instance_id, set())
                self._out_of_line[instance_id] = set(report.unreachable)
                if report.in_line and self._flagged.get(instance_id, 0) == flagged:
                    self._dirty.pop(instance_id, None)
        for label in sorted(set(report.unreachable) - before):
            log.warning(
                "instance %s: node %s out of reach (%s); its accounts are Unavailable",
                instance_id,
                label,
                report.unreachable[label],
            )
        for label in sorted(before - set(report.unreachable)):
            log.info("instance %s: node %s in reach again", instance_id, label)
        return report

    def _normal(self, instance_id: str) -> repo.InstanceRow | None:
        with self.deps.engine.connect() as conn:
            instance = repo.get_instance_any_tenant(conn, instance_id)
        return instance if instance is not None and instance.status == "Normal" else None

    def _pass(self, instance: repo.InstanceRow) -> ReconcileReport:
        from rkvstore.services.common import is_legacy

        deps = self.deps
        if is_legacy(instance):
            return self._legacy_pass(instance)
        # One deadline for the pass's node work: a registered deployment looked at
        # again, every node's users read, the repairs.
        with bounded.exchange(deps.settings.node_timeout_seconds):
            return self._pass_nodes(instance)

    def _pass_nodes(self, instance: repo.InstanceRow) -> ReconcileReport:
        from rkvstore.services.common import LOCAL, desired_users, instance_nodes

        deps = self.deps
        desired = desired_users(deps, instance)
        with deps.engine.connect() as conn:
            pending = repo.pending_user_names(conn, instance.instance_id)
        # A user a failed CreateAccount may have left on a node, never recorded.
        leftover = sorted(set(pending) - {u.name for u in desired})
        report = deps.redis.reconcile(
            instance_nodes(deps, instance),
            desired,
            strict=instance.provider == LOCAL,
            remove=leftover,
        )
        if pending and report.in_line:  # every node reached: none of them holds one now
            with deps.engine.begin() as conn:
                repo.drop_pending_users(conn, instance.instance_id, pending)
        return report

    def _legacy_pass(self, instance: repo.InstanceRow) -> ReconcileReport:
        """Before 6.0: every node on the recorded ``requirepass``, reached with it
        or with a pending one (of a change never recorded)."""
        from rkvstore.services.common import instance_addresses, pending_passwords

        deps = self.deps
        return deps.redis.reconcile_legacy(
            instance_addresses(deps, instance),
            deps.box.open(instance.mgmt_password_encrypted),
            pending_passwords(deps, instance),
            instance.instance_id,
        )

    def run_once(self) -> None:
        """Start a pass over every ``Normal`` instance that has none running yet.

        Passes run on their own threads, several at once, and the loop does not
        wait for them: a hung node holds up its own instance's passes (for the
        node timeout), never another instance's.
        """
        with self.deps.engine.connect() as conn:
            ids = [
                (i.instance_id, i.account_id)
                for i in repo.list_instances(conn)
                if i.status == "Normal"
            ]
        for instance_id, tenant in ids:
            with self._lock:
                if instance_id in self._in_flight:
                    continue
                self._in_flight.add(instance_id)
            if not self._passes.submit(tenant, functools.partial(self._pass_logged, instance_id)):
                with self._lock:  # shut down
                    self._in_flight.discard(instance_id)
                return

    def _pass_logged(self, instance_id: str) -> None:
        deadline = time.monotonic() + self.interval
        try:
            while not self._stop.is_set():
                try:
                    self._reconcile(instance_id, holding_slot=False)
                    return
                except _Busy:
                    # The task holding the slot brings the nodes in line, unless
                    # it is the one that flagged the instance (a rolled-back
                    # change, still releasing its slot): then soon, not an
                    # interval later.
                    with self._lock:
                        flagged = instance_id in self._dirty
                    if not flagged or time.monotonic() >= deadline:
                        return
                    self._stop.wait(RETRY_BUSY_SECONDS)
        except SQLAlchemyError as exc:
            if not database_unavailable(exc):
                log.exception("reconciling %s failed; will retry", instance_id)
            # else: the loop says once that the database is away
        except Exception:
            log.exception("reconciling %s failed; will retry", instance_id)
        finally:
            with self._lock:
                self._in_flight.discard(instance_id)

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        # Queued passes are dropped; running ones (bounded by the node timeout)
        # finish before the engine and the database they use are closed.
        self._passes.shutdown()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                if self._database_down:
                    self._database_down = False
                    log.info("reconciler: the database answers again")
            except SQLAlchemyError as exc:
                if not database_unavailable(exc):
                    log.exception("reconciler pass failed; will retry")
                elif not self._database_down:
                    self._database_down = True
                    log.warning(
                        "reconciler: the database is unavailable (%s); will retry",
                        describe_database_error(exc),
                    )
            except Exception:
                log.exception("reconciler pass failed; will retry")
            self._wake.wait(self.interval)
            self._wake.clear()
