"""One path for every request: bound, decode, authenticate, look up, parse, authorize, run."""

from __future__ import annotations

import json
import logging
import re
import time
from calendar import timegm
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.responses import Response

from rkvstore import errors
from rkvstore.api import render
from rkvstore.api.params import decode_pairs, merge_pairs, printable
from rkvstore.api.signing import (
    SignatureFormatError,
    SignedRequest,
    signed_request_v1,
    signed_request_v3,
)
from rkvstore.api.throttle import RateLimiter
from rkvstore.errors import ApiError
from rkvstore.iam.authorize import authorize
from rkvstore.iam.credentials import ACTIVE, AccessKey
from rkvstore.metrics import record_request
from rkvstore.services import audit
from rkvstore.services.context import CallContext, Deps, current_request_id
from rkvstore.services.params import parse_params
from rkvstore.services.registry import ActionSpec, Registry
from rkvstore.store.db import database_unavailable, describe_database_error
from rkvstore.store.nonces import use_nonce

access_log = logging.getLogger("rkvstore.access")
log = logging.getLogger("rkvstore.api")

FORM_TYPE = "application/x-www-form-urlencoded"
_TIMESTAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?Z$")


@dataclass(frozen=True)
class RawRequest:
    method: str
    path: str
    query: bytes
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes
    client_ip: str = ""
    scheme: str = "http"


@dataclass
class _Trace:
    """What the access log line says about one request (never a secret)."""

    request_id: str
    started: float
    action: str = "-"
    principal: str = "-"
    code: str = "-"
    version: str = ""  # once known: the product whose codes the answer uses
    message: str = ""  # the error answer's message, for the audit event
    # The call's audit event, once it reaches authorization (issue 14).
    event: audit.PendingEvent | None = None


@dataclass(frozen=True)
class Prepared:
    """A request authenticated, parsed and authorized: its action still to run."""

    trace: _Trace
    spec: ActionSpec
    ctx: CallContext
    params: dict[str, Any]
    response_format: str

    @property
    def tenant(self) -> str:
        return self.ctx.account_id


def principal_label(key: AccessKey) -> str:
    """Who called, for log lines: a tenant's root and a RAM user named ``root`` differ."""
    kind = "root" if key.is_root else "user"
    return f"{kind}:{key.account_id}/{key.principal_name}"


# A value written bare in the access log; any other is written as a JSON string.
_BARE = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")


def logged(value: str) -> str:
    """``value`` as the access log writes it: bare when plainly safe, else quoted with
    quotes, backslashes, control and non-ASCII characters escaped, so that no value
    (an Action or a user name, which come with the request) can add a field or a line."""
    return value if _BARE.fullmatch(value) else json.dumps(value)


def log_access(trace: _Trace, status: int) -> None:
    """The request's one access-log line, and its metrics."""
    seconds = time.perf_counter() - trace.started
    access_log.info(
        "request_id=%s action=%s principal=%s status=%d code=%s duration_ms=%.1f",
        logged(trace.request_id),
        logged(trace.action),
        logged(trace.principal),
        status,
        logged(trace.code),
        seconds * 1000,
    )
    record_request(trace.action, trace.code, seconds)


def new_trace() -> _Trace:
    return _Trace(render.new_request_id(), time.perf_counter())


def parse_timestamp(value: str) -> int:
    m = _TIMESTAMP.match(value)
    if m is None:
        raise ApiError(errors.TIMESTAMP_FORMAT)
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    try:
        return timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError) as exc:  # pragma: no cover - regex bounds digits
        raise ApiError(errors.TIMESTAMP_FORMAT) from exc


def _lower_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        value = value_b.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


class Dispatcher:
    def __init__(
        self,
        deps: Deps,
        registry: Registry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.deps = deps
        self.registry = registry
        self.clock = clock
        s = deps.settings
        self.limiter = RateLimiter(s.rate_limit_per_second, s.rate_limit_burst)

    # ------------------------------------------------------------------ entry

    def handle(self, raw: RawRequest) -> Response:
        """The whole request on this thread (``prepare`` then ``execute``)."""
        step = self.prepare(raw)
        return step if isinstance(step, Response) else self.execute(step)

    def prepare(self, raw: RawRequest) -> Response | Prepared:
        """Everything before the action runs; an answer already if it ends there."""
        trace = new_trace()
        try:
            return self._prepare(raw, trace)
        except Exception as exc:
            response = self._failure(trace, exc)
        if trace.event is not None:  # denied (or failed) at authorization
            audit.settle_quietly(self.deps.single, trace.event, trace.code, trace.message)
        log_access(trace, response.status_code)
        return response

    def execute(self, prepared: Prepared) -> Response:
        """Run the action and answer it."""
        trace = prepared.trace
        token = current_request_id.set(trace.request_id)
        event = trace.event
        event_token = audit.current_event.set(event)
        try:
            body = prepared.spec.handler(prepared.ctx, prepared.params)
            if event is not None:  # a read, or a change whose record did not carry it
                audit.settle(self.deps.single, event, None, None)
            response = render.success(
                prepared.spec.name, trace.request_id, body, prepared.response_format
            )
        except Exception as exc:
            response = self._failure(trace, exc)
            if event is not None:
                audit.settle_quietly(self.deps.single, event, trace.code, trace.message)
        finally:
            audit.current_event.reset(event_token)
            current_request_id.reset(token)
        log_access(trace, response.status_code)
        return response

    def _failure(self, trace: _Trace, exc: Exception) -> Response:
        """The answer to a request that failed: its own error, 503 for the database, else 500."""
        if isinstance(exc, ApiError):
            err = exc
        elif isinstance(exc, SQLAlchemyError) and database_unavailable(exc):
            log.warning(
                "request %s: the database is unavailable (%s)",
                trace.request_id,
                describe_database_error(exc),
            )
            err = ApiError(errors.SERVICE_UNAVAILABLE)
        elif isinstance(exc, IntegrityError):
            # Two requests raced for one row and an action did not expect it: the
            # loser may simply retry. Logged whole: it is a race to be handled.
            log.exception("request %s lost a race for a row", trace.request_id)
            err = ApiError(errors.SERVICE_UNAVAILABLE)
        else:
            log.exception("request %s failed unexpectedly", trace.request_id)
            err = ApiError(errors.INTERNAL_ERROR)
        err = self.registry.translate(trace.version, err)
        trace.code, trace.message = err.code, err.message
        return render.error(trace.request_id, err)

    # ------------------------------------------------------------------ pipeline

    def _prepare(self, raw: RawRequest, trace: _Trace) -> Prepared:
        settings = self.deps.settings
        if raw.method not in ("GET", "POST"):
            raise ApiError(errors.METHOD_NOT_ALLOWED)
        if raw.path != "/":
            raise ApiError(errors.ACTION_NOT_FOUND)
        limits = {
            "max_bytes": settings.max_request_bytes,
            "max_parameters": settings.max_parameters,
        }
        query = decode_pairs(raw.query, **limits)
        headers = _lower_headers(raw.headers)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if len(raw.body) > settings.max_request_bytes:
            raise ApiError(errors.REQUEST_TOO_LARGE, limit=str(settings.max_request_bytes))
        form = decode_pairs(raw.body, **limits) if content_type == FORM_TYPE else []
        if len(query) + len(form) > settings.max_parameters:
            raise ApiError(errors.TOO_MANY_PARAMETERS, limit=str(settings.max_parameters))
        values = merge_pairs(query, form)

        # Printable only: the name arrives before any signature check, and a
        # line break in it would forge access-log lines.
        trace.action = printable(values.get("Action") or headers.get("x-acs-action", "")) or "-"

        caller, signature = self._authenticate(raw, query, form, headers)
        trace.principal = principal_label(caller)
        if signature == "V1":
            # V1 signs the parameters, not the headers: an x-acs-action header
            # could be added on the way and turn a signed call into another.
            action, version = values.get("Action", ""), values.get("Version", "")
        else:  # V3 requires x-acs-action and x-acs-version among the signed headers
            action = values.get("Action") or headers.get("x-acs-action", "")
            version = values.get("Version") or headers.get("x-acs-version", "")
        trace.action = printable(action) or "-"

        if not version:
            raise ApiError(errors.MISSING_PARAMETER, name="Version")
        if not self.registry.knows_version(version):
            raise ApiError(errors.INVALID_VERSION)
        trace.version = version
        if not action:
            raise ApiError(errors.MISSING_PARAMETER, name="Action")
        spec = self.registry.lookup(version, action)
        if spec is None:
            raise ApiError(errors.ACTION_NOT_FOUND)

        wait_ms = self.limiter.acquire(caller.access_key_id)
        if wait_ms:
            raise ApiError(errors.THROTTLING_USER, headers={"x-acs-retry-after": str(wait_ms)})

        params = parse_params(spec.params, values)
        ctx = CallContext(
            request_id=trace.request_id,
            caller=caller,
            source_ip=raw.client_ip,
            secure_transport=raw.scheme == "https",
            deps=self.deps,
            now=self.clock(),
            host=headers.get("host", ""),
        )
        if spec.canonical is not None:
            params = spec.canonical(params, ctx.region, caller.account_id)
        arn_params = params
        if spec.self_param and params.get(spec.self_param) is None and caller.user_name:
            arn_params = {**params, spec.self_param: caller.user_name}
        if settings.audit:
            trace.event = audit.pending(
                request_id=trace.request_id,
                caller=caller,
                source_ip=raw.client_ip,
                now=ctx.now,
                action=spec.name,
                version=version,
                trail=spec.event_trail,
                resource_path=spec.event_path(arn_params),
                writes=spec.access_level not in ("list", "read"),
            )
        authorize(
            self.deps,
            caller,
            spec.ram_action,
            spec.resource_arns(ctx.region, caller.account_id, arn_params),
            ctx.condition_context(),
        )
        return Prepared(trace, spec, ctx, params, values.get("Format", "JSON"))

    # ------------------------------------------------------------------ authentication

    def _signed_request(
        self,
        raw: RawRequest,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
        headers: dict[str, str],
    ) -> SignedRequest:
        try:
            signed = signed_request_v3(raw.method, raw.path, query, headers, raw.body)
            if signed is None:
                signed = signed_request_v1(raw.method, [*query, *form])
        except SignatureFormatError as exc:
            raise ApiError(errors.INCOMPLETE_SIGNATURE) from exc
        if signed is None:
            raise ApiError(errors.MISSING_SIGNATURE)
        return signed

    def _authenticate(
        self,
        raw: RawRequest,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
        headers: dict[str, str],
    ) -> tuple[AccessKey, str]:
        """The caller's key, and the signature version that proved it (``V1``, ``V3``)."""
        signed = self._signed_request(raw, query, form, headers)
        v1 = signed.version == "V1"
        if not signed.access_key_id:
            raise ApiError(errors.MISSING_PARAMETER, name="AccessKeyId")
        if not signed.timestamp:
            raise ApiError(errors.MISSING_PARAMETER, name="Timestamp" if v1 else "x-acs-date")
        if not signed.nonce:
            raise ApiError(
                errors.MISSING_PARAMETER, name="SignatureNonce" if v1 else "x-acs-signature-nonce"
            )
        if len(signed.nonce) > 128:
            raise ApiError(errors.INVALID_PARAMETER, name="SignatureNonce")
        timestamp = parse_timestamp(signed.timestamp)

        deps = self.deps
        key = deps.access_keys.get(deps.single, deps.box, signed.access_key_id)
        if key is None:
            raise ApiError(errors.ACCESS_KEY_NOT_FOUND)
        secret = key.secret.reveal()
        if not signed.verify(secret):
            raise ApiError(errors.SIGNATURE_DOES_NOT_MATCH, sts=signed.masked_string_to_sign)
        if key.status != ACTIVE:
            raise ApiError(errors.ACCESS_KEY_DISABLED)
        window = self.deps.settings.timestamp_window_seconds
        if abs(self.clock() - timestamp) > window:
            raise ApiError(errors.TIMESTAMP_EXPIRED)
        if not use_nonce(deps.single, key.access_key_id, signed.nonce, timestamp + window + 60):
            raise ApiError(errors.SIGNATURE_NONCE_USED)
        return key, signed.version
