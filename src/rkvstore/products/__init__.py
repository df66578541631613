"""The products served on the one endpoint, each a package with the same shape.

A product holds its action table (``actions.py``: ``actions()``), its
handlers, its rules, its error codes (``errors.py``, added to the kernel's one
catalogue), its system policies if it has any (``policies.py``, added to
``iam.system_policies``) and its own store queries. The kernel (api, iam, engine, store,
services) names no product; this module is the one place that lists them.
"""

from __future__ import annotations

from rkvstore.errors import CATALOGUE
from rkvstore.iam.system_policies import SYSTEM_POLICIES
from rkvstore.metrics import ScrapeGauge
from rkvstore.products.actiontrail import actions as actiontrail
from rkvstore.products.actiontrail import policies as _trail_policies  # noqa: F401  (catalogued)
from rkvstore.products.kms import actions as kms
from rkvstore.products.kms import policies as _kms_policies  # noqa: F401  (catalogued)
from rkvstore.products.kvstore import actions as kvstore
from rkvstore.products.kvstore import errors as _kvstore_errors  # noqa: F401  (codes catalogued)
from rkvstore.products.kvstore import policies as _kvstore_policies  # noqa: F401  (catalogued)
from rkvstore.products.ram import actions as ram
from rkvstore.products.ram import errors as _ram_errors  # noqa: F401  (codes catalogued)
from rkvstore.services.context import Background, Deps
from rkvstore.services.registry import ActionSpec, Registry

PRODUCTS = (ram, kvstore, kms, actiontrail)


def all_actions() -> list[ActionSpec]:
    return [spec for product in PRODUCTS for spec in product.actions()]


def background_workers(deps: Deps) -> list[Background]:
    """The products' own loops, run beside the reconciler."""
    from rkvstore.products.actiontrail.retention import Retention
    from rkvstore.products.kms.scheduler import Scheduler

    return [Scheduler(deps), Retention(deps)]


def scrape_gauges() -> list[ScrapeGauge]:
    """The products' gauges read from the database at each scrape of /metrics."""
    from rkvstore.products.kms.store import count_due_rotations

    return [
        ScrapeGauge(
            "rkvstore_kms_secrets_due",
            "KMS secrets whose rotation is due and not done yet.",
            count_due_rotations,
        )
    ]


def build_registry() -> Registry:
    """Every action of every product, each declared once; with the answers a
    product gives its own way (KMS's codes for the kernel's errors)."""
    return Registry(all_actions(), translations={kms.VERSION: kms.TRANSLATED})


__all__ = ["CATALOGUE", "SYSTEM_POLICIES", "build_registry"]
