"""Every action rkvstore serves, declared once: parameters, RAM action, resource, access."""

from __future__ import annotations

from rkvstore.api.params import Param, ParamSpec
from rkvstore.config import API_VERSION
from rkvstore.services import regions
from rkvstore.services.registry import ActionSpec, Registry

ALL_INSTANCES = "instance/*"
ONE_INSTANCE = "instance/{InstanceId}"


def build_registry() -> Registry:
    return Registry(
        [
            ActionSpec(
                name="DescribeRegions",
                version=API_VERSION,
                params=ParamSpec((Param("AcceptLanguage"),)),
                handler=regions.describe_regions,
                access_level="list",
                resource=ALL_INSTANCES,
            ),
            ActionSpec(
                name="DescribeZones",
                version=API_VERSION,
                params=ParamSpec((Param("RegionId", required=True), Param("AcceptLanguage"))),
                handler=regions.describe_zones,
                access_level="list",
                resource=ALL_INSTANCES,
            ),
        ]
    )
