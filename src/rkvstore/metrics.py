"""Prometheus metrics: what is counted, and the only label values allowed.

The metrics are module-level objects of ``prometheus_client`` (cheap: a
counter is a float and a lock; nothing is started, opened or connected here)
so that the engine, the task slots and the schedulers count where things
happen without being handed a registry. They are exposed only when a metrics
port is set (``api/probes.py``).

No label carries a secret or an unbounded value: ``action`` is one of the
registry's actions (else ``other``), ``code`` one of the error catalogue's
codes (else ``other``), and the other labels take the few values written here.

With ``serve --workers N`` every worker counts in files of its own under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen
when ``prometheus_client`` is first imported: ``cli.use_multiprocess_dir`` sets it
in the parent, before that and before it forks), and any worker answers a scrape
with the sum over all of them. Per-worker answers would be wrong: the
workers share one port, so two scrapes could reach two workers and a counter
would seem to go backwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import Connection

from rkvstore.errors import CATALOGUE

OTHER = "other"
SUCCESS = "Success"
# Codes an answer may carry that are not in the catalogue: the connection ended
# before an answer (app.py), or no answer was an error.
_EXTRA_CODES = frozenset({SUCCESS, "ClientDisconnect", "RequestTimeout"})

# This process's own metrics; in multiprocess mode a scrape reads the files instead.
OWN = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "rkvstore_requests",
    "API requests answered, by action and answer code (Success, or the error code).",
    ["action", "code"],
    registry=OWN,
)
REQUEST_SECONDS = Histogram(
    "rkvstore_request_duration_seconds",
    "Time from a request's arrival to its answer, by action.",
    ["action"],
    registry=OWN,
)
TASK_SLOT_WAITS = Counter(
    "rkvstore_task_slot_waits",
    "Changes that found their instance's task slot busy, by how the wait ended "
    "(taken, or task_exists when the wait ran out).",
    ["result"],
    registry=OWN,
)
TASK_SLOT_WAIT_SECONDS = Histogram(
    "rkvstore_task_slot_wait_seconds",
    "How long a change that found its instance's task slot busy waited.",
    registry=OWN,
)
NODE_CHANGE_FAILURES = Counter(
    "rkvstore_node_change_failures",
    "Changes to an instance's nodes that failed on at least one node (and were undone).",
    registry=OWN,
)
NODE_ROLLBACKS = Counter(
    "rkvstore_node_rollbacks",
    "Nodes a failed change was undone on, by result (ok, or failed: left to the reconciler).",
    ["result"],
    registry=OWN,
)
RECONCILE_REPAIRS = Counter(
    "rkvstore_reconcile_repairs",
    "Users the reconciler found out of line on a node and repaired.",
    registry=OWN,
)
KMS_ROTATIONS = Counter(
    "rkvstore_kms_rotations",
    "Scheduled rotations of KMS secrets, by result (done, failed: retried at the next look).",
    ["result"],
    registry=OWN,
)

# Every value of the fixed labels starts at 0: a rate exists before the first event.
for _counter, _values in (
    (TASK_SLOT_WAITS, ("taken", "task_exists")),
    (NODE_ROLLBACKS, ("ok", "failed")),
    (KMS_ROTATIONS, ("done", "failed")),
):
    for _value in _values:
        _counter.labels(_value)

_known_actions: frozenset[str] = frozenset()


def know_actions(names: Iterable[str]) -> None:
    """The action names a label may carry (the registry's, set when the app is built)."""
    global _known_actions
    _known_actions = _known_actions | frozenset(names)


def action_label(action: str) -> str:
    return action if action in _known_actions else OTHER


def code_label(code: str) -> str:
    if code == "-":
        return SUCCESS
    return code if code in CATALOGUE.by_code or code in _EXTRA_CODES else OTHER


def record_request(action: str, code: str, seconds: float) -> None:
    """One answered request (the access log's line, as numbers)."""
    label = action_label(action)
    REQUESTS.labels(label, code_label(code)).inc()
    REQUEST_SECONDS.labels(label).observe(seconds)


def count_node_failure(rollbacks: Iterable[str | None]) -> None:
    """A change failed on a node; it was undone on nodes with these errors (None: ok)."""
    NODE_CHANGE_FAILURES.inc()
    count_rollbacks(rollbacks)


def count_rollbacks(errors: Iterable[str | None]) -> None:
    for error in errors:
        NODE_ROLLBACKS.labels("failed" if error else "ok").inc()


def multiprocess() -> bool:
    """Counting in prometheus_client's multiprocess files (``serve --workers N``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@dataclass(frozen=True)
class ScrapeGauge:
    """A gauge computed from the database at each scrape (shared by every process)."""

    name: str
    help: str
    count: Callable[[Connection, float], float]
