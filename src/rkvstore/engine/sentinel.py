"""A deployment managed by Redis Sentinel: where its master is, as its Sentinels say (issue 13).

rkvstore asks the Sentinels (``SENTINEL GET-MASTER-ADDR-BY-NAME``), one after
the other, the first answer wins; the master then names its replicas
(``INFO replication``) as for any registered deployment. Each look opens a
connection per Sentinel asked and closes it: a look comes once per change and
per verify of the instance, not per request. Sentinels are reached in plain TCP
(the data nodes may use TLS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from rkvstore.engine import bounded
from rkvstore.engine.addresses import normalize_host
from rkvstore.secret import Secret


class SentinelError(Exception):
    """No Sentinel answered (``kind`` ``unreachable``, ``auth``), or none knows the name
    (``unknown``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(kind)


@dataclass(frozen=True, eq=False)
class SentinelSettings:
    endpoints: tuple[tuple[str, int], ...]  # the Sentinels, as IP addresses
    master_name: str
    password: Secret | None = None  # the Sentinels' requirepass, if they have one

    def sealed_form(self) -> str:
        """JSON of every setting, the password revealed: only for ``SecretBox.seal``."""
        return json.dumps(
            {
                "endpoints": [list(e) for e in self.endpoints],
                "master_name": self.master_name,
                "password": None if self.password is None else self.password.reveal(),
            }
        )

    @classmethod
    def from_sealed_form(cls, text: str) -> SentinelSettings:
        data = json.loads(text)
        password = data.get("password")
        return cls(
            endpoints=tuple((str(h), int(p)) for h, p in data["endpoints"]),
            master_name=str(data["master_name"]),
            password=None if password is None else Secret(str(password)),
        )

    @property
    def labels(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.endpoints)


def master_of(settings: SentinelSettings, timeout: float) -> tuple[str, int]:
    """The master's address as the first Sentinel that answers says; ``SentinelError``."""
    failures: list[str] = []
    for host, port in settings.endpoints:
        client = bounded.client(
            host,
            port,
            password=None if settings.password is None else settings.password.reveal(),
            timeout=timeout,
            decode_responses=True,
            protocol=2,
        )
        try:
            with bounded.exchange(timeout):
                reply = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings.master_name
                )
        except redis.AuthenticationError:
            failures.append("auth")
            continue
        except (redis.RedisError, OSError):
            failures.append("unreachable")
            continue
        finally:
            client.close()
        if not reply:
            raise SentinelError("unknown")
        address, master_port = reply
        return normalize_host(str(address)), int(master_port)
    raise SentinelError("auth" if "auth" in failures else "unreachable")
