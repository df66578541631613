"""What a service function gets: who calls, in which request, with which parts."""

from __future__ import annotations

import contextvars
import functools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine

from rkvstore.config import Settings
from rkvstore.crypto import SecretBox
from rkvstore.iam.credentials import AccessKey, AccessKeyCache

if TYPE_CHECKING:
    from rkvstore.engine.provider import LocalProvider
    from rkvstore.engine.redis_engine import RedisEngine
    from rkvstore.services.reconcile import Reconciler
    from rkvstore.services.tasks import TaskSlots


# The request being served on this thread, for log lines written far below the
# handler ("-" outside a request).
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_request_id", default="-"
)


class Background(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Deps:
    """The long-lived parts, built once by ``bootstrap``."""

    settings: Settings
    engine: Engine
    box: SecretBox
    slots: TaskSlots
    redis: RedisEngine
    local: LocalProvider
    reconciler: Reconciler
    # Instance builds in flight: joined at shutdown before the nodes are stopped.
    builds: list[threading.Thread] = field(default_factory=list)
    access_keys: AccessKeyCache = field(default_factory=AccessKeyCache)
    # The products' own background loops (KMS's rotation scheduler): started and
    # stopped with the reconciler.
    background: list[Background] = field(default_factory=list)

    @functools.cached_property
    def single(self) -> Engine:
        """The engine for one statement on its own, committed as it runs: a read
        needs no transaction around it (on PostgreSQL a BEGIN and a ROLLBACK, two
        round trips), nor does a lone INSERT."""
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")


@dataclass(frozen=True)
class CallContext:
    request_id: str
    caller: AccessKey
    source_ip: str
    secure_transport: bool
    deps: Deps
    now: float  # the request's time, for acs:CurrentTime
    # The request's Host header as it arrived ("" without one): where the client
    # reached this server, which may be neither the bind address nor its name.
    host: str = ""

    def condition_context(self) -> dict[str, Any]:
        """What RAM conditions may test about this request (api.md §5)."""
        return {
            "acs:SourceIp": self.source_ip,
            "acs:SecureTransport": self.secure_transport,
            "acs:CurrentTime": self.now,
        }

    @property
    def region(self) -> str:
        return self.deps.settings.region

    @property
    def account_id(self) -> str:
        return self.caller.account_id
