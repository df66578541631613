"""Redis before 6.0 (api.md §3): no ACL; the instance's one account is ``requirepass``.

Such a node has a single password, which is both the account's and the one
rkvstore logs in with; replicas log in to their master with it too
(``masterauth``). A change therefore sets ``masterauth`` and ``requirepass``
together on every node (masters included, for a later failover) and rewrites
redis.conf so that it survives a restart; Redis keeps this password in
redis.conf as written, as it always has for ``requirepass``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis

from rkvstore import metrics
from rkvstore.engine import bounded
from rkvstore.engine.acl import NO_CONFIG_FILE, NodeFailure
from rkvstore.faults import crash_point
from rkvstore.secret import Secret

log = logging.getLogger("rkvstore.engine")

_AUTH_OFF = "no password is set"


@dataclass(frozen=True)
class LegacyOutcome:
    error: str | None = None
    maybe_applied: bool = False  # a CONFIG SET was sent (its answer unknown or ok)
    repaired: bool = False  # reconcile: the node's password had to be put back


def _short(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    return f"{type(exc).__name__}: {text[:120]}"


def _outcome(future: Future[LegacyOutcome]) -> LegacyOutcome:
    try:
        return future.result()
    except CancelledError:  # the pool is shutting down: the node was not reached
        return LegacyOutcome(error="CancelledError: shutting down")


class LegacyNodes:
    """Nodes reached with the old ``AUTH <password>``, changed through ``CONFIG SET``."""

    def __init__(self, pool: ThreadPoolExecutor, node_timeout: float) -> None:
        self._pool = pool
        self.node_timeout = node_timeout

    def _login(self, host: str, port: int, passwords: Sequence[Secret]) -> redis.Redis:
        """A client logged in with the first of ``passwords`` the node accepts.

        A node whose password was taken off (``requirepass ""``) is let in
        without one, so that the caller can put the password back.
        """
        refused: redis.AuthenticationError | None = None
        for password in [*passwords, None]:
            if password is None and (refused is None or _AUTH_OFF not in str(refused)):
                break
            client = bounded.client(
                host,
                port,
                password=None if password is None else password.reveal(),
                timeout=self.node_timeout,
                decode_responses=True,
                protocol=2,  # no HELLO before 6.0
            )
            try:
                client.ping()
                return client
            except redis.AuthenticationError as exc:
                client.close()
                refused = exc
            except BaseException:
                client.close()
                raise
        raise refused or redis.AuthenticationError("no password to log in with")

    def _set(self, client: redis.Redis, password: Secret) -> None:
        client.config_set("masterauth", password.reveal())
        client.config_set("requirepass", password.reveal())
        try:
            client.config_rewrite()
        except redis.ResponseError as exc:
            if NO_CONFIG_FILE not in str(exc):
                raise
            # Started without redis.conf: nothing to persist to (the operator's choice).

    def _change(
        self, address: tuple[str, int], login: Sequence[Secret], new: Secret
    ) -> LegacyOutcome:
        with bounded.exchange(self.node_timeout):
            return self._change_now(address, login, new)

    def _change_now(
        self, address: tuple[str, int], login: Sequence[Secret], new: Secret
    ) -> LegacyOutcome:
        try:
            client = self._login(*address, login)
        except (redis.RedisError, OSError) as exc:
            return LegacyOutcome(error=_short(exc))
        try:
            self._set(client, new)
        except (redis.RedisError, OSError) as exc:
            return LegacyOutcome(error=_short(exc), maybe_applied=True)
        finally:
            client.close()
        return LegacyOutcome(maybe_applied=True)

    def _each(
        self, addresses: Sequence[tuple[str, int]], work: Callable[[tuple[str, int]], LegacyOutcome]
    ) -> dict[tuple[str, int], LegacyOutcome]:
        futures = {a: self._submit(work, a) for a in addresses}
        return {a: _outcome(f) for a, f in futures.items()}

    def _submit(
        self, work: Callable[[tuple[str, int]], LegacyOutcome], address: tuple[str, int]
    ) -> Future[LegacyOutcome]:
        try:
            return self._pool.submit(work, address)
        except RuntimeError:  # the pool is shut down: the node is not reached
            done: Future[LegacyOutcome] = Future()
            done.set_result(LegacyOutcome(error="RuntimeError: shutting down"))
            return done

    def set_password(
        self, addresses: Sequence[tuple[str, int]], logins: Sequence[Secret], new: Secret
    ) -> None:
        """Every node to ``new``, or every node that may have changed back to ``logins[0]``.

        ``logins`` is the recorded password, then any password a change that
        was never recorded may have left on a node.
        """
        futures = {a: self._submit(lambda a: self._change(a, logins, new), a) for a in addresses}
        results: dict[tuple[str, int], LegacyOutcome] = {}
        for address, future in futures.items():
            results[address] = _outcome(future)
            if len(results) == 1:
                crash_point("fanout-first-node")
        failed = {f"{h}:{p}": r.error for (h, p), r in results.items() if r.error is not None}
        if not failed:
            return
        touched = [a for a, r in results.items() if r.maybe_applied]
        undone = self._each(touched, lambda a: self._change(a, [new, *logins], logins[0]))
        metrics.count_node_failure(o.error for o in undone.values())
        for (host, port), outcome in undone.items():
            if outcome.error:
                log.error(
                    "putting the password back on node %s:%d failed (%s); the reconciler will",
                    host,
                    port,
                    outcome.error,
                )
        raise NodeFailure({k: v or "failed" for k, v in failed.items()})

    def reconcile(
        self,
        addresses: Sequence[tuple[str, int]],
        current: Secret,
        pending: Sequence[Secret],
    ) -> dict[tuple[str, int], LegacyOutcome]:
        """Bring every node to ``current``: from a ``pending`` one (a change that was
        not recorded), or ``masterauth`` alone when it differs."""
        return self._each(addresses, lambda a: self._repair(a, current, pending))

    def _repair(
        self, address: tuple[str, int], current: Secret, pending: Sequence[Secret]
    ) -> LegacyOutcome:
        with bounded.exchange(self.node_timeout):
            return self._repair_now(address, current, pending)

    def _repair_now(
        self, address: tuple[str, int], current: Secret, pending: Sequence[Secret]
    ) -> LegacyOutcome:
        try:
            client = self._login(*address, [current, *pending])
        except (redis.RedisError, OSError) as exc:
            return LegacyOutcome(error=_short(exc))
        try:
            accepted = client.connection_pool.connection_kwargs.get("password")
            masterauth = client.config_get("masterauth").get("masterauth", "")
            if accepted == current.reveal() and masterauth == current.reveal():
                return LegacyOutcome()
            self._set(client, current)
            return LegacyOutcome(maybe_applied=True, repaired=True)
        except (redis.RedisError, OSError) as exc:
            return LegacyOutcome(error=_short(exc))
        finally:
            client.close()
