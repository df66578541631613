"""A Redis application whose credentials live in a KMS secret served by rkvstore.

It reads the secret with the official KMS SDK (``alibabacloud-kms20160120``, V3
signatures), logs in to Redis with redis-py, and runs SET/GET in a loop. When
Redis refuses the credentials (the secret was rotated and the old password is
gone), it reads the secret again, once, and reconnects. See README.md.

Configuration (environment):
  KMS_ENDPOINT                     rkvstore's host:port, e.g. 127.0.0.1:8080
  KMS_PROTOCOL                     http (default) or https
  ALIBABA_CLOUD_ACCESS_KEY_ID      an AccessKey allowed kms:GetSecretValue on the secret
  ALIBABA_CLOUD_ACCESS_KEY_SECRET
  ALIBABA_CLOUD_REGION_ID          default cn-hangzhou
  SECRET_NAME                      the Redis secret
  REDIS_HOST, REDIS_PORT           the Redis node (default 127.0.0.1:6379)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# The KMS SDK is imported where it is used, so that cache_client_app.py can reuse
# SecretBackedRedis in a virtualenv that has aliyun-secret-manager-client instead.
if TYPE_CHECKING:
    from alibabacloud_kms20160120.client import Client as KmsClient

log = logging.getLogger("redis_secret_app")


@dataclass(frozen=True)
class RedisCredentials:
    account: str
    password: str = field(repr=False)  # never in a log line or a traceback
    version_id: str


class SecretReadError(Exception):
    """The secret could not be read (KMS unreachable, access denied, ...)."""


def kms_client_from_env(environ: Mapping[str, str] = os.environ) -> KmsClient:
    from alibabacloud_kms20160120.client import Client as KmsClient
    from alibabacloud_tea_openapi.models import Config

    return KmsClient(
        Config(
            access_key_id=environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
            access_key_secret=environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
            endpoint=environ["KMS_ENDPOINT"],
            protocol=environ.get("KMS_PROTOCOL", "http"),
            region_id=environ.get("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou"),
        )
    )


def secret_reader(client: KmsClient, secret_name: str) -> Callable[[], RedisCredentials]:
    """A function that reads the secret's ACSCurrent value: always valid on every node
    from the moment it is returned until at least the next rotation (docs/kms.md §4)."""

    from alibabacloud_kms20160120 import models as kms_models

    def read() -> RedisCredentials:
        request = kms_models.GetSecretValueRequest(
            secret_name=secret_name, version_stage="ACSCurrent"
        )
        try:
            body = client.get_secret_value(request).body
        except Exception as exc:  # the SDK raises its own TeaException, and OSErrors
            raise SecretReadError(f"GetSecretValue {secret_name}: {exc}") from None
        data = json.loads(body.secret_data)
        return RedisCredentials(data["AccountName"], data["AccountPassword"], body.version_id)

    return read


def is_auth_error(exc: redis.RedisError) -> bool:
    """WRONGPASS / NOAUTH: the credentials we hold are no longer good."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH"))


class SecretBackedRedis:
    """redis-py with credentials from a secret, re-read once when Redis refuses them.

    Connections already open keep working after a rotation (Redis does not log out
    a connected client when its password is removed); a new connection made with
    the old password, once the old password is gone, is refused: that is when the
    secret is read again. Thread-safe: threads that hit the refusal together cause
    one re-read.
    """

    def __init__(
        self,
        read_secret: Callable[[], RedisCredentials],
        host: str,
        port: int,
        *,
        timeout: float = 2.0,
        settle_attempts: int = 10,
        settle_pause: float = 0.1,
    ) -> None:
        self._read_secret = read_secret
        self._settle_attempts, self._settle_pause = settle_attempts, settle_pause
        self._host, self._port, self._timeout = host, port, timeout
        self._lock = threading.Lock()
        self.rereads = 0  # how often the secret was read again after a refusal
        self.credentials = read_secret()
        self._client = self._connect(self.credentials)

    def _connect(self, creds: RedisCredentials) -> redis.Redis:
        return redis.Redis(
            host=self._host,
            port=self._port,
            username=creds.account,
            password=creds.password,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            decode_responses=True,
            # redis-py retries a ConnectionError (AuthenticationError is one) with
            # back-off by default: a refusal must come to us at once.
            retry=Retry(NoBackoff(), 0),
        )

    def execute(self, *args: Any) -> Any:
        """One command; on WRONGPASS/NOAUTH, re-read the secret, reconnect, and try once
        more. A second refusal is raised: the secret does not hold a working password."""
        client = self._client
        try:
            return client.execute_command(*args)
        except redis.RedisError as exc:
            if not is_auth_error(exc):
                raise
        self._refresh(client)
        return self._client.execute_command(*args)

    def _refresh(self, refused: redis.Redis) -> None:
        with self._lock:
            if self._client is not refused:
                return  # another thread has re-read already
            creds = self._read_secret()
            # The refused version read back: a rotation has changed the nodes but not yet
            # recorded its new version (with GracePeriod 0s the old password goes in that
            # step). Read again a few times, briefly, rather than log in to fail again.
            for _ in range(self._settle_attempts):
                if creds.version_id != self.credentials.version_id:
                    break
                log.info("version %s read back refused: reading again", creds.version_id)
                time.sleep(self._settle_pause)
                creds = self._read_secret()
            log.info(
                "credentials refused: re-read secret, version %s -> %s",
                self.credentials.version_id,
                creds.version_id,
            )
            self.credentials = creds
            self._client = self._connect(creds)
            self.rereads += 1  # last: whoever sees the count sees the new credentials
        refused.close()

    def reconnect(self) -> None:
        """Drop the open connections, as a network blip or an idle timeout would:
        the next command logs in again with the credentials held."""
        self._client.connection_pool.disconnect()

    def close(self) -> None:
        self._client.close()


@dataclass
class LoopStats:
    iterations: int = 0
    failures: int = 0  # iterations whose commands failed even after a re-read


def run_loop(
    store: SecretBackedRedis,
    *,
    iterations: int,
    key: str = "redis_secret_app:counter",
    reconnect_every: int = 0,
    pause: float = 0.0,
    stop: threading.Event | None = None,
) -> LoopStats:
    """SET then GET ``iterations`` times (fewer if ``stop`` is set); a failure is counted
    and logged (without any credential), and the loop goes on."""
    stop = stop or threading.Event()
    stats = LoopStats()
    for i in range(iterations):
        if stop.is_set():
            break
        if reconnect_every and i and i % reconnect_every == 0:
            store.reconnect()
        try:
            store.execute("SET", key, str(i))
            if store.execute("GET", key) != str(i):
                log.warning("iteration %d: GET did not return what SET wrote", i)
        except (redis.RedisError, SecretReadError) as exc:
            stats.failures += 1
            held = store.credentials.version_id
            log.warning("iteration %d failed: %s (version %s)", i, type(exc).__name__, held)
        stats.iterations += 1
        if pause:
            stop.wait(pause)
    return stats


def run_from_env(read_secret: Callable[[], RedisCredentials], description: str) -> None:
    """The command line shared by app.py and cache_client_app.py: Redis from REDIS_HOST and
    REDIS_PORT, the loop's pace from the options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between iterations")
    parser.add_argument(
        "--reconnect-every",
        type=int,
        default=10,
        help="drop the connections every N iterations (0: never), to show a re-read",
    )
    args = parser.parse_args()
    store = SecretBackedRedis(
        read_secret,
        os.environ.get("REDIS_HOST", "127.0.0.1"),
        int(os.environ.get("REDIS_PORT", "6379")),
    )
    held = store.credentials
    log.info("logged in as %s (version %s)", held.account, held.version_id)
    try:
        stats = run_loop(
            store,
            iterations=args.iterations,
            reconnect_every=args.reconnect_every,
            pause=args.pause,
        )
    except KeyboardInterrupt:
        return
    finally:
        store.close()
    log.info(
        "%d iterations, %d failed, %d re-reads", stats.iterations, stats.failures, store.rereads
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_from_env(
        secret_reader(kms_client_from_env(), os.environ["SECRET_NAME"]),
        __doc__.splitlines()[0],
    )


if __name__ == "__main__":
    main()
