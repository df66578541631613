"""What a service function gets: who calls, in which request, with which parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from rkvstore.config import Settings
from rkvstore.crypto import SecretBox
from rkvstore.iam.credentials import AccessKey


@dataclass(frozen=True)
class Deps:
    """The long-lived parts, built once by ``bootstrap``."""

    settings: Settings
    engine: Engine
    box: SecretBox


@dataclass(frozen=True)
class CallContext:
    request_id: str
    caller: AccessKey
    source_ip: str
    secure_transport: bool
    deps: Deps

    @property
    def region(self) -> str:
        return self.deps.settings.region

    @property
    def account_id(self) -> str:
        return self.caller.account_id
