"""What ``rkvstore audit`` does besides parsing its options: page through LookupEvents
and print the events as a table or as JSON lines (one event a line, for a SIEM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

VERSION = "2020-07-06"
PAGE = 50  # LookupEvents' largest page

# CLI option -> LookupAttribute key.
FILTERS = {
    "event_name": "EventName",
    "user": "UserName",
    "resource": "ResourceName",
    "resource_type": "ResourceType",
    "service": "ServiceName",
    "access_key": "EventAccessKeyId",
}


class Caller(Protocol):
    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]: ...


def lookup_params(
    start: str | None, end: str | None, filters: dict[str, str | None]
) -> dict[str, Any]:
    params: dict[str, Any] = {"StartTime": start, "EndTime": end}
    given = [(FILTERS[name], value) for name, value in filters.items() if value]
    for i, (key, value) in enumerate(given, start=1):
        params[f"LookupAttribute.{i}.Key"] = key
        params[f"LookupAttribute.{i}.Value"] = value
    return params


def events(client: Caller, params: dict[str, Any], limit: int) -> Iterator[dict[str, Any]]:
    """Up to ``limit`` events, newest first, following NextToken (bounded by ``limit``)."""
    token: str | None = None
    left = limit
    while left > 0:
        page = {**params, "MaxResults": min(PAGE, left), "NextToken": token}
        body = client.call("LookupEvents", page)
        found: list[dict[str, Any]] = body.get("Events", [])
        yield from found
        left -= len(found)
        token = body.get("NextToken")
        if not token or not found:
            return


def json_line(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, sort_keys=True)


COLUMNS = ("TIME", "EVENT", "SERVICE", "PRINCIPAL", "ACCESS KEY", "SOURCE IP", "RESOURCE", "RESULT")


def row(event: dict[str, Any]) -> tuple[str, ...]:
    who = event.get("userIdentity", {})
    resource = event.get("resourceName") or "-"
    return (
        event.get("eventTime", ""),
        event.get("eventName", ""),
        event.get("serviceName", ""),
        f"{who.get('type', '')}:{who.get('userName', '')}",
        who.get("accessKeyId", ""),
        event.get("sourceIpAddress", "") or "-",
        f"{event.get('resourceType', '')}:{resource}" if event.get("resourceType") else "-",
        event.get("errorCode") or "Success",
    )


def table(all_events: list[dict[str, Any]]) -> list[str]:
    rows = [COLUMNS, *(row(e) for e in all_events)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
