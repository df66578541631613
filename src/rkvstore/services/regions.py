"""DescribeRegions and DescribeZones: the deployment's one region and its zones."""

from __future__ import annotations

from typing import Any

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.services.context import CallContext


def describe_regions(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    settings = ctx.deps.settings
    zones = settings.zone_ids
    return {
        "RegionIds": {
            "KVStoreRegion": [
                {
                    "RegionId": settings.region,
                    "LocalName": settings.region,
                    "RegionEndpoint": f"{settings.host}:{settings.port}",
                    "ZoneIds": ",".join(zones),
                    "ZoneIdList": {"ZoneId": zones},
                }
            ]
        }
    }


def describe_zones(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    settings = ctx.deps.settings
    if params["RegionId"] != settings.region:
        raise ApiError(errors.INVALID_PARAMETER, name="RegionId")
    return {
        "Zones": {
            "KVStoreZone": [
                {
                    "ZoneId": zone,
                    "ZoneName": zone,
                    "RegionId": settings.region,
                    "IsRds": True,
                    "Disabled": False,
                    "SwitchNetwork": True,
                }
                for zone in settings.zone_ids
            ]
        }
    }
