"""Retention of the audit trail (issue 14) on SQLite and PostgreSQL: old events go, in batches."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import func, insert, select

from rkvstore.config import Settings
from rkvstore.products.actiontrail import retention
from rkvstore.products.actiontrail.retention import Retention
from rkvstore.services.context import Deps
from rkvstore.store.db import make_engine, migrate
from rkvstore.store.tables import audit_events

NOW = 1_800_000_000.0
DAY = 86400


def _event(at: float) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "account_id": "1234567890123456",
        "event_ms": int(at * 1000),
        "event_name": "ResetAccountPassword",
        "service_name": "R-kvstore",
        "api_version": "2015-01-01",
        "event_rw": "Write",
        "principal_type": "root-account",
        "principal_name": "root",
        "access_key_id": "LTAIexample",
        "source_ip": "127.0.0.1",
        "request_id": str(uuid.uuid4()).upper(),
        "resource_type": "ACS::Redis::Account",
        "resource_name": "r-x/demo",
        "error_code": None,
        "error_message": None,
    }


def test_events_past_the_retention_are_deleted_in_batches(
    database_url: str, monkeypatch: Any
) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        old = [_event(NOW - 91 * DAY - i) for i in range(7)]
        kept = [_event(NOW - 89 * DAY), _event(NOW)]
        with engine.begin() as conn:
            conn.execute(insert(audit_events), [*old, *kept])
        monkeypatch.setattr(retention, "BATCH", 3)  # 7 rows: three batches, the last short
        deps = cast(Deps, SimpleNamespace(engine=engine, settings=Settings()))
        assert Retention(deps, clock=lambda: NOW).run_once() == 7
        with engine.connect() as conn:
            left = set(conn.execute(select(audit_events.c.event_id)).scalars())
            assert left == {e["event_id"] for e in kept}
        # A shorter retention (RKVSTORE_AUDIT_RETENTION_DAYS) takes the older one too.
        deps = cast(Deps, SimpleNamespace(engine=engine, settings=Settings(audit_retention_days=1)))
        assert Retention(deps, clock=lambda: NOW).run_once() == 1
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(audit_events)).scalar() == 1
    finally:
        engine.dispose()
