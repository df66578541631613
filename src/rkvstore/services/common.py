"""Kept for code not yet moved to the modules it now imports from; import from those.

The reconciler's batch pass (``reconcile_batch``) imports these from here and
is being changed on another branch; once that has merged, its import moves to
``instance_nodes`` and this module goes.
"""

from __future__ import annotations

from rkvstore.services.instance_nodes import (
    CLUSTER,
    LOCAL,
    REGISTERED,
    _include_new_nodes,
    instance_addresses,
    is_legacy,
    node_addresses,
    pending_passwords,
)

__all__ = [
    "CLUSTER",
    "LOCAL",
    "REGISTERED",
    "_include_new_nodes",
    "instance_addresses",
    "is_legacy",
    "node_addresses",
    "pending_passwords",
]
