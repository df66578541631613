"""ActionTrail's error codes for LookupEvents, in the kernel's one catalogue."""

from __future__ import annotations

from rkvstore.errors import CATALOGUE

_e = CATALOGUE.add

START_TIME = _e(
    "InvalidParameter.StartTime",
    400,
    "The StartTime is not a UTC time in the format YYYY-MM-DDThh:mm:ssZ.",
)
END_TIME = _e(
    "InvalidParameter.EndTime",
    400,
    "The EndTime is not a UTC time in the format YYYY-MM-DDThh:mm:ssZ.",
)
TIME_RANGE = _e("InvalidParameter.TimeRange", 400, "The StartTime is later than the EndTime.")
LOOKUP_ATTRIBUTE = _e(
    "InvalidParameter.LookupAttribute",
    400,
    "A LookupAttribute needs a Key and a Value, and its Key must be one of EventName, "
    "ResourceName, UserName, EventAccessKeyId, ServiceName, ResourceType, EventRW, EventId.",
)
NEXT_TOKEN = _e(
    "InvalidParameter.NextToken",
    400,
    "The NextToken is not valid: pass the one the last page answered, with the same parameters.",
)
