"""The ASGI app: one RPC route; the request is read (bounded) and handed to the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rkvstore import errors
from rkvstore.api import render
from rkvstore.api.dispatch import Dispatcher, RawRequest
from rkvstore.bootstrap import start_background, stop_background
from rkvstore.errors import ApiError
from rkvstore.services.context import Deps
from rkvstore.services.registry import Registry
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


def create_app(deps: Deps, registry: Registry, *, start_engine: bool = True) -> Starlette:
    """The app; its lifespan starts and stops the engine's background work."""
    dispatcher = Dispatcher(deps, registry)
    limit = deps.settings.max_request_bytes

    async def rpc(request: Request) -> Response:
        body = await _read_bounded(request, limit)
        if body is None:
            err = ApiError(errors.REQUEST_TOO_LARGE, limit=str(limit))
            return render.error(render.new_request_id(), err)
        raw = RawRequest(
            method=request.method,
            path=request.scope["path"],
            query=request.scope.get("query_string", b""),
            headers=request.scope.get("headers", []),
            body=body,
            client_ip=request.client.host if request.client else "",
            scheme=request.scope.get("scheme", "http"),
        )
        return await run_in_threadpool(dispatcher.handle, raw)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if start_engine:
            await run_in_threadpool(start_background, deps)
        purger = asyncio.create_task(_purge_nonces_forever(deps))
        try:
            yield
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            if start_engine:
                await run_in_threadpool(stop_background, deps)

    async def rpc_asgi(scope: Scope, receive: Receive, send: Send) -> None:
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
