"""The reconciler's loop on a real SQLite store: when does a flagged instance get its pass?

An instance without nodes keeps Redis out of this: the pass over it is a real
one (it reads the database, takes the slot, compares zero nodes) and brings the
instance in line the moment it runs, so ``in_line`` shows when it ran.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event

from rkvstore.bootstrap import build_deps, ensure_root_tenant
from rkvstore.config import Settings
from rkvstore.crypto import SecretBox
from rkvstore.secret import Secret
from rkvstore.services.context import Deps
from rkvstore.services.instance_nodes import LOCAL, NORMAL
from rkvstore.services.reconcile import RETRY_BUSY_SECONDS
from rkvstore.services.reconcile_flags import LocalFlags
from rkvstore.store import repo
from tests.integration.test_resilience import wait_for

INSTANCE = "r-reconcilertest01"
INTERVAL = 60.0  # far beyond the test: a pass it sees is never the interval's


def nodeless_instance(
    conn: Connection, box: SecretBox, account_id: str, instance_id: str, status: str
) -> None:
    """An instance recorded with no node: passes and changes over it touch no Redis."""
    repo.insert_instance(
        conn,
        {
            "instance_id": instance_id,
            "account_id": account_id,
            "name": "no nodes",
            "status": status,
            "provider": LOCAL,
            "engine_version": "7.0",
            "architecture": "standard",
            "node_type": "STAND_ALONE",
            "shard_count": 1,
            "zone_id": "cn-hangzhou-h",
            "instance_class": "redis.master.small.default",
            "charge_type": "PostPaid",
            "host": "127.0.0.1",
            "port": 1,
            "mgmt_password_encrypted": box.seal(Secret("unused-management-password")),
        },
    )


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[Deps]:
    settings = Settings(
        data_dir=tmp_path / "data",
        reconcile_interval_seconds=INTERVAL,
        task_lease_seconds=30.0,
    )
    built = build_deps(settings)
    root = ensure_root_tenant(built)
    assert root is not None
    with built.engine.begin() as conn:
        nodeless_instance(conn, built.box, root.created.account_id, INSTANCE, NORMAL)
    try:
        yield built
    finally:
        built.reconciler.stop()
        built.engine.dispose()


def test_a_flagged_instance_whose_slot_was_taken_is_passed_over_soon(deps: Deps) -> None:
    """The task that flags an instance (a rolled-back change) still holds its slot
    when it wakes the loop; the pass is put off for a moment, not for an interval."""
    reconciler = deps.reconciler
    with deps.slots.hold(INSTANCE, "ResetAccountPassword"):
        reconciler.mark_dirty(INSTANCE)
        reconciler.start()  # its first pass meets the held slot
        time.sleep(5 * RETRY_BUSY_SECONDS)
        assert not reconciler.in_line(INSTANCE)  # still busy: no pass could run
    released = time.monotonic()
    wait_for("a pass after the slot was released", lambda: reconciler.in_line(INSTANCE), 10)
    assert time.monotonic() - released < INTERVAL / 2


def test_a_flag_written_during_a_read_of_the_shared_state_is_still_seen(
    deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer commits a flag and then drops it from this process's memory. A
    reader that took the memory after its read of the database could miss it in
    both (the read just before the commit, the memory just after the drop): a
    failed change's account read ``Available`` at once. Here the writer runs
    exactly in that gap, right after the read's statement."""
    reconciler = deps.reconciler
    # No background writer: the flag is written only where this test says.
    monkeypatch.setattr(LocalFlags, "_write_forever", lambda self: None)
    reconciler.mark_dirty(INSTANCE, "demo")
    written: list[bool] = []
    reads: list[str] = []

    def write_after_the_read(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if not reads and statement.lstrip().startswith("SELECT reconcile_state.dirty"):
            reads.append(statement)  # first: the writer's own statements come here too
            written.append(reconciler.flags.write())

    event.listen(deps.engine, "after_cursor_execute", write_after_the_read)
    try:
        assert not reconciler.in_line(INSTANCE, "demo")
    finally:
        event.remove(deps.engine, "after_cursor_execute", write_after_the_read)
    assert written == [True]
    assert reconciler.flags.pending(INSTANCE) == set()  # written, and dropped here
    assert not reconciler.in_line(INSTANCE, "demo")  # now from the database
