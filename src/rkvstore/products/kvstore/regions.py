"""DescribeRegions and DescribeZones: the deployment's one region and its zones."""

from __future__ import annotations

import re
from typing import Any

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.services.context import CallContext

# A Host header worth echoing: a name, an IPv4 address or a bracketed IPv6 one, and
# an optional port. Anything else (it is the client's to write) is not repeated.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)


def region_endpoint(ctx: CallContext) -> str:
    """Where the client reached this server (its Host header), else the bind address."""
    if _HOST.fullmatch(ctx.host):
        return ctx.host
    settings = ctx.deps.settings
    return f"{settings.host}:{settings.port}"


def describe_regions(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    settings = ctx.deps.settings
    zones = settings.zone_ids
    return {
        "RegionIds": {
            "KVStoreRegion": [
                {
                    "RegionId": settings.region,
                    "LocalName": settings.region,
                    "RegionEndpoint": region_endpoint(ctx),
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
