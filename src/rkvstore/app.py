"""The ASGI app: one RPC route; the request is read (bounded) and handed to the dispatcher.

A request is prepared (authenticated, parsed, authorized) and its action run
on one of ``request_workers`` threads, one hop from the event loop; at most
``tenant_workers`` actions of one tenant run at once (api/shares.py): a
tenant whose nodes stall fills its own share and waits there (in the event
loop, holding no thread) while every other tenant's actions run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rkvstore import errors, metrics
from rkvstore.api import probes, render
from rkvstore.api.dispatch import Dispatcher, Prepared, RawRequest, log_access, new_trace
from rkvstore.api.http_guard import REQUEST_TIMED_OUT, quiet_accept_errors
from rkvstore.api.shares import TenantShares
from rkvstore.bootstrap import start_background, stop_background
from rkvstore.errors import ApiError
from rkvstore.services.context import Deps
from rkvstore.services.registry import Registry
from rkvstore.store.db import head_revision
from rkvstore.store.nonces import purge_expired_nonces

log = logging.getLogger("rkvstore")
NONCE_PURGE_SECONDS = 60.0


async def _read_bounded(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class Background(Protocol):
    """What runs beside the requests, started and stopped with the app."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def create_app(
    deps: Deps,
    registry: Registry,
    *,
    start_engine: bool = True,
    background: Background | None = None,
) -> Starlette:
    """The app; its lifespan starts and stops the engine's background work: ``background``
    if given (a worker of several: supervision.py), else ``start_background`` (and at
    the end ``stop_background``) unless ``start_engine`` is false."""
    dispatcher = Dispatcher(deps, registry)
    limit = deps.settings.max_request_bytes
    shares = TenantShares(deps.settings.request_workers, deps.settings.tenant_workers)
    head = head_revision()
    metrics.know_actions(spec.name for spec in registry)

    async def rpc(request: Request) -> Response:
        try:
            body = await _read_bounded(request, limit)
        except ClientDisconnect:
            # Nobody to answer: one access-log line, no traceback.
            trace = new_trace()
            if request.scope.get("state", {}).get(REQUEST_TIMED_OUT):
                trace.code = "RequestTimeout"  # the server closed it: the body was too slow
                log_access(trace, 408)
                return Response(status_code=408)
            trace.code = "ClientDisconnect"
            log_access(trace, 499)
            return Response(status_code=499)
        if body is None:
            err = ApiError(errors.REQUEST_TOO_LARGE, limit=str(limit))
            trace = new_trace()
            trace.code = err.code
            response = render.error(trace.request_id, err)
            log_access(trace, response.status_code)
            return response
        raw = RawRequest(
            method=request.method,
            path=request.scope["path"],
            query=request.scope.get("query_string", b""),
            headers=request.scope.get("headers", []),
            body=body,
            client_ip=request.client.host if request.client else "",
            scheme=request.scope.get("scheme", "http"),
        )
        step = await anyio.to_thread.run_sync(prepare_and_run, raw, limiter=shares.total)
        if isinstance(step, Response):
            return step
        # The tenant's share was full: wait for one here, holding no thread.
        await shares.take(step.tenant)
        try:
            return await anyio.to_thread.run_sync(dispatcher.execute, step, limiter=shares.total)
        finally:
            shares.give_back(step.tenant)

    def prepare_and_run(raw: RawRequest) -> Response | Prepared:
        """On a worker thread: the answer, or the prepared request if its tenant's share is full."""
        step = dispatcher.prepare(raw)
        if isinstance(step, Response) or not shares.try_take(step.tenant):
            return step
        try:
            return dispatcher.execute(step)
        finally:
            shares.give_back(step.tenant)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        quiet_accept_errors(asyncio.get_running_loop())
        if background is not None:
            await run_in_threadpool(background.start)
        elif start_engine:
            await run_in_threadpool(start_background, deps)
        purger = asyncio.create_task(_purge_nonces_forever(deps))
        try:
            yield
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            if background is not None:
                await run_in_threadpool(background.stop)
            elif start_engine:
                await run_in_threadpool(stop_background, deps)

    async def rpc_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path in probes.HEALTH_PATHS and scope["method"] in ("GET", "HEAD"):
            # Before the dispatcher, which answers only "/"; on a thread: /readyz
            # reads the database (bounded by RKVSTORE_DB_TIMEOUT_SECONDS).
            response = await run_in_threadpool(probes.health_response, path, deps, head)
        else:
            response = await rpc(Request(scope, receive))
        await response(scope, receive, send)

    # No routes: every request, whatever its method or path, reaches ``rpc``,
    # which answers in the API's own error format (never a router's plain-text
    # 404/405, never a redirect, which the new SDK would take for success).
    app = Starlette(routes=[], lifespan=lifespan)
    app.router.redirect_slashes = False
    app.router.default = rpc_asgi
    app.state.dispatcher = dispatcher
    return app


async def _purge_nonces_forever(deps: Deps) -> None:
    while True:
        await asyncio.sleep(NONCE_PURGE_SECONDS)
        try:
            removed = await run_in_threadpool(purge_expired_nonces, deps.engine, int(time.time()))
            if removed:
                log.debug("purged %d expired nonces", removed)
        except Exception:
            log.exception("purging expired nonces failed; will retry")
