"""A server that does no work: what the benchmark's own client and HTTP cost.

    python bench/_null_app.py PORT

The same HTTP stack ``rkvstore serve`` runs by default (uvicorn with
httptools and uvloop), one process, and an ASGI app that reads the request
and answers ``200 {"RequestId": ...}`` without looking at it: no signature
check, no database, no Redis. A client's p50 against it is the least any
server could answer that client in; its rate, the most any server could be
asked for by those clients on this machine. The benchmarks print it beside
rkvstore so that a target can be read against what is possible at all.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"RequestId":"' + str(uuid.uuid4()).upper().encode() + b'"}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json;charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
    )
