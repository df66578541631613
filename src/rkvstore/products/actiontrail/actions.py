"""ActionTrail's actions (2020-07-06), declared once: LookupEvents over the audit trail."""

from __future__ import annotations

from typing import Final

from rkvstore.products.actiontrail import errors as _errors  # noqa: F401  (codes catalogued)
from rkvstore.products.actiontrail import lookup
from rkvstore.services.audit import Trail
from rkvstore.services.params import Param
from rkvstore.services.registry import ActionSpec, SpecMaker

VERSION: Final = "2020-07-06"

_spec = SpecMaker(VERSION, "actiontrail", trail=Trail("Actiontrail"))


def actions() -> list[ActionSpec]:
    attributes = [
        Param(f"LookupAttribute.{i}.{part}", max_length=512)
        for i in range(1, lookup.MAX_ATTRIBUTES + 1)
        for part in ("Key", "Value")
    ]
    return [
        _spec(
            "LookupEvents",
            lookup.lookup_events,
            "list",
            "*",
            Param("StartTime", max_length=32),
            Param("EndTime", max_length=32),
            Param("Direction", "enum", choices=("FORWARD", "BACKWARD")),
            Param("MaxResults", "int", default=20, min_value=1, max_value=50),
            Param("NextToken", max_length=256),
            *attributes,
        ),
    ]
