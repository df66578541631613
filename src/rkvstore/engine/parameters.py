"""Redis parameters on an instance's nodes: read them, set them on every node or on none.

A read is one round trip per node (``INFO server`` for the config file, a
``CONFIG GET`` per name); every node at once, within one deadline. A change
sends every node its ``CONFIG SET``s (and ``CONFIG REWRITE`` when asked); if
any node refuses or does not answer, every node that may have changed gets its
values from the read back, and the caller gets ``NodeFailure``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from rkvstore import metrics
from rkvstore.engine import bounded
from rkvstore.engine.acl import Node, NodeFailure, _timeout_of, batch_failure, exchange_batches
from rkvstore.engine.node_facts import info_field, text

log = logging.getLogger("rkvstore.engine")


@dataclass(frozen=True)
class NodeParameters:
    """What one node said: its values and its config file, or why it could not say."""

    values: dict[str, str]
    config_file: str  # "" when the node runs without one
    error: str | None = None


def read(nodes: Sequence[Node], names: Sequence[str]) -> dict[str, NodeParameters]:
    """Every node's values of ``names`` and its config file, at once."""
    batch = [["INFO", "server"], *(["CONFIG", "GET", name] for name in names)]
    answers = exchange_batches([(node, batch) for node in nodes])
    out: dict[str, NodeParameters] = {}
    for node in nodes:
        replies = answers[node.label]
        failed = batch_failure(replies)
        if failed is not None or isinstance(replies, str):
            out[node.label] = NodeParameters({}, "", failed or "failed")
            continue
        values: dict[str, str] = {}
        for reply in replies[1:]:
            if isinstance(reply, dict):  # RESP3
                pairs = list(reply.items())
            else:
                pairs = list(zip(reply[::2], reply[1::2], strict=True))
            for key, value in pairs:
                values[text(key)] = text(value)
        out[node.label] = NodeParameters(values, info_field(replies[0], "config_file"))
    return out


def _set_batch(values: dict[str, str], rewrite: bool) -> list[list[str]]:
    batch = [["CONFIG", "SET", name, value] for name, value in values.items()]
    return batch + ([["CONFIG", "REWRITE"]] if rewrite else [])


def _run(nodes: Sequence[Node], batches: dict[str, list[list[str]]]) -> dict[str, str | None]:
    """Each node's error (``None``: every command took)."""
    answers = exchange_batches([(node, batches[node.label]) for node in nodes])
    out: dict[str, str | None] = {}
    for node in nodes:
        out[node.label] = batch_failure(answers[node.label])
    return out


def set_all_or_nothing(
    nodes: Sequence[Node],
    before: dict[str, dict[str, str]],
    values: dict[str, str],
    *,
    rewrite: bool,
) -> None:
    """``values`` on every node, or each node that may have changed back to ``before``.

    ``before``: each node's values of the names in ``values``, as just read.
    ``rewrite``: persist with ``CONFIG REWRITE`` (else the caller persists).
    """
    batch = _set_batch(values, rewrite)
    results = _run(nodes, {node.label: batch for node in nodes})
    failed = {label: error or "failed" for label, error in results.items() if error is not None}
    if not failed:
        return
    # Any node may have changed: one that failed or went silent may have taken a
    # CONFIG SET before, so every node is put back, not only those that answered.
    metrics.NODE_CHANGE_FAILURES.inc()
    put_back(nodes, before, list(values), rewrite=rewrite)
    raise NodeFailure(failed)


def put_back(
    nodes: Sequence[Node], before: dict[str, dict[str, str]], names: Sequence[str], *, rewrite: bool
) -> None:
    """Each node's ``names`` back to ``before``, with a budget of its own; failures logged."""
    batches = {n.label: _set_batch({k: before[n.label][k] for k in names}, rewrite) for n in nodes}
    with bounded.exchange(_timeout_of(nodes), fresh=True):
        outcomes = _run(nodes, batches)
    for label, error in outcomes.items():
        if error:
            log.error("putting parameters back on node %s failed (%s)", label, error)
    metrics.count_rollbacks(outcomes.values())
