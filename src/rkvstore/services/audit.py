"""The audit trail's writing half (issue 14): one event per call that reached authorization.

An event is made before a call is authorized (``pending``) and written once:

- in the transaction that records the call's change (``write_in``: called by
  ``task_slot.recording`` and by the products' own write transactions), so an
  event exists for every change that landed and none for one that did not
  (a kill -9 between the nodes' change and the record leaves neither);
- otherwise when the answer is decided (``settle``): a read, a refusal, a
  denial, a change that failed or rolled back, as one INSERT committed alone.

What an event holds is names only: the action, the caller's identity and
AccessKeyId, the resource, the result. Parameter values are never copied, so
no password, secret, signature or AccessKey secret can reach the table.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, insert, update
from sqlalchemy.exc import SQLAlchemyError

from rkvstore.iam.credentials import AccessKey
from rkvstore.store.tables import audit_events

log = logging.getLogger("rkvstore.audit")

# One statement, compiled once and cached: each event only binds its values.
_INSERT = insert(audit_events)

ROOT_ACCOUNT = "root-account"
RAM_USER = "ram-user"


@dataclass(frozen=True)
class Trail:
    """How a product names itself and its resources in ActionTrail events."""

    service: str  # ActionTrail's serviceName: R-kvstore, Ram, Kms, ...
    # The resource path's first segment (``instance/...``) -> ActionTrail's resourceType.
    types: Mapping[str, str] = field(default_factory=dict)

    def resource(self, path: str) -> tuple[str, str]:
        """(type, name) of a filled resource path; a wildcard names no resource."""
        segment, _, name = path.partition("/")
        name = "" if name.strip("/*") == "" else name.strip("/")
        return self.types.get(segment, segment), name


@dataclass
class PendingEvent:
    """One call's event, until it is written (``written``: committed or about to be)."""

    values: dict[str, Any]
    written: bool = False


# The event of the call being run on this thread: the transactions that record a
# change find it here, far below the handler (a worker thread has none).
current_event: contextvars.ContextVar[PendingEvent | None] = contextvars.ContextVar(
    "current_event", default=None
)


def pending(
    *,
    request_id: str,
    caller: AccessKey,
    source_ip: str,
    now: float,
    action: str,
    version: str,
    trail: Trail,
    resource_path: str,
    writes: bool,
) -> PendingEvent:
    resource_type, resource_name = trail.resource(resource_path)
    return PendingEvent(
        {
            "event_id": str(uuid.uuid4()),
            "account_id": caller.account_id,
            "event_ms": int(now * 1000),
            "event_name": action,
            "service_name": trail.service,
            "api_version": version,
            "event_rw": "Write" if writes else "Read",
            "principal_type": ROOT_ACCOUNT if caller.is_root else RAM_USER,
            "principal_name": caller.principal_name,
            "access_key_id": caller.access_key_id,
            "source_ip": source_ip[:64],
            "request_id": request_id,
            "resource_type": resource_type[:64],
            "resource_name": resource_name[:512],
            "error_code": None,
            "error_message": None,
        }
    )


def write_in(conn: Connection) -> None:
    """The running call's event, as a success, in ``conn``'s transaction (the one
    recording its change); once per call: later records of the same call add none."""
    event = current_event.get()
    if event is None or event.written:
        return
    conn.execute(_INSERT, event.values)
    event.written = True


def rolled_back() -> None:
    """The transaction that wrote the running call's event rolled back, and the call
    goes on to try again (a race retried): the next record carries the event."""
    event = current_event.get()
    if event is not None:
        event.written = False


def settle(engine: Engine, event: PendingEvent, code: str | None, message: str | None) -> None:
    """Write ``event`` with the call's result once the answer is decided.

    A success whose change was recorded is already written. A failure after
    its record (rare: the record committed, a later step failed) turns the
    written event into a failed one; if that record rolled back after all,
    the event is inserted now.
    """
    if code is None and event.written:
        return
    values = {**event.values, "error_code": code, "error_message": (message or "")[:1024] or None}
    with engine.connect() as conn:  # autocommit engine: one statement, no transaction
        if event.written:
            changed = conn.execute(
                update(audit_events)
                .where(audit_events.c.event_id == values["event_id"])
                .values(error_code=code, error_message=values["error_message"])
            ).rowcount
            if changed:
                return
        conn.execute(_INSERT, values)
    event.written = True


def settle_quietly(engine: Engine, event: PendingEvent, code: str, message: str) -> None:
    """A failed call's event: the answer is an error already, and stays the one it is."""
    try:
        settle(engine, event, code, message)
    except SQLAlchemyError as exc:
        log.warning(
            "request %s: audit event not written (%s)",
            event.values["request_id"],
            type(exc).__name__,
        )


def name_resource(name: str) -> None:
    """Name the running call's resource once it exists (``CreateInstance``'s new ID)."""
    event = current_event.get()
    if event is not None and not event.values["resource_name"]:
        event.values["resource_name"] = name[:512]
