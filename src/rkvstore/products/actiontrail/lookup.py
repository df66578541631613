"""LookupEvents: a tenant's own events, filtered and paged as ActionTrail answers them."""

from __future__ import annotations

import base64
import binascii
import re
from calendar import timegm
from datetime import UTC, datetime
from typing import Any

from rkvstore.errors import ApiError, ErrorSpec
from rkvstore.products.actiontrail import errors as trail_errors
from rkvstore.products.actiontrail import store
from rkvstore.services.audit import ROOT_ACCOUNT
from rkvstore.services.context import CallContext

MAX_ATTRIBUTES = 5  # LookupAttribute.1 .. .5
DEFAULT_WINDOW = 7 * 24 * 3600  # ActionTrail: StartTime defaults to seven days ago
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$")
_TOKEN = re.compile(r"^(\d{1,15})\.([0-9a-f-]{36})$")


def parse_time(text: str, error: ErrorSpec) -> int:
    """Epoch seconds of ``YYYY-MM-DDThh:mm:ssZ``."""
    m = _TIME.match(text)
    if m is None:
        raise ApiError(error)
    try:
        year, month, day, hour, minute, second = (int(g) for g in m.groups())
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ApiError(error) from exc
    seconds = timegm(moment.utctimetuple())
    if seconds < 0:  # before 1970: no event is, and a window reaching back breaks the clock
        raise ApiError(error)
    return seconds


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_token(position: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{position[0]}.{position[1]}".encode()).decode()


def decode_token(token: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise ApiError(trail_errors.NEXT_TOKEN) from exc
    m = _TOKEN.match(text)
    if m is None:
        raise ApiError(trail_errors.NEXT_TOKEN)
    return int(m.group(1)), m.group(2)


def filters(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    found = []
    for i in range(1, MAX_ATTRIBUTES + 1):
        key, value = params[f"LookupAttribute.{i}.Key"], params[f"LookupAttribute.{i}.Value"]
        if key is None and value is None:
            continue
        if key not in store.COLUMNS or value is None:
            raise ApiError(trail_errors.LOOKUP_ATTRIBUTE)
        found.append((key, value))
    return tuple(found)


def event_json(row: dict[str, Any], region: str) -> dict[str, Any]:
    """One event as ActionTrail writes it (the SDK's ``Events`` items are these dicts)."""
    root = row["principal_type"] == ROOT_ACCOUNT
    return {
        "eventId": row["event_id"],
        "eventVersion": "1",
        "eventType": "ApiCall",
        "eventCategory": "Management",
        "eventName": row["event_name"],
        "eventRW": row["event_rw"],
        "eventTime": utc(row["event_ms"]),
        "acsRegion": region,
        "apiVersion": row["api_version"],
        "serviceName": row["service_name"],
        "requestId": row["request_id"],
        "sourceIpAddress": row["source_ip"],
        "userIdentity": {
            "type": row["principal_type"],
            "principalId": row["account_id"]
            if root
            else f"{row['account_id']}:{row['principal_name']}",
            "accountId": row["account_id"],
            "accessKeyId": row["access_key_id"],
            "userName": row["principal_name"],
        },
        "resourceType": row["resource_type"],
        "resourceName": row["resource_name"],
        "errorCode": row["error_code"] or "",
        "errorMessage": row["error_message"] or "",
    }


def lookup_events(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    now = int(ctx.now)
    end = now if params["EndTime"] is None else parse_time(params["EndTime"], trail_errors.END_TIME)
    start = (
        max(0, end - DEFAULT_WINDOW)
        if params["StartTime"] is None
        else parse_time(params["StartTime"], trail_errors.START_TIME)
    )
    if start > end:
        raise ApiError(trail_errors.TIME_RANGE)
    query = store.Query(
        account_id=ctx.account_id,  # a tenant sees its own events only
        start_ms=start * 1000,
        end_ms=end * 1000 + 999,
        filters=filters(params),
        forward=params["Direction"] == "FORWARD",
    )
    after = None if params["NextToken"] is None else decode_token(params["NextToken"])
    with ctx.deps.single.connect() as conn:
        rows, last = store.page(conn, query, after, params["MaxResults"])
    answer: dict[str, Any] = {
        "StartTime": utc(start * 1000),
        "EndTime": utc(end * 1000),
        "Events": [event_json(r, ctx.region) for r in rows],
    }
    if last is not None:
        answer["NextToken"] = encode_token(last)
    return answer
