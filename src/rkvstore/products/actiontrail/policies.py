"""ActionTrail's system policies, in the kernel's one catalogue: who may read the trail."""

from __future__ import annotations

from rkvstore.iam.system_policies import SYSTEM_POLICIES

_p = SYSTEM_POLICIES.add

FULL_ACCESS = _p(
    "AliyunActionTrailFullAccess",
    "Provides full access to ActionTrail.",
    '{"Version":"1","Statement":[{"Effect":"Allow","Action":"actiontrail:*","Resource":"*"}]}',
)
READ_ONLY_ACCESS = _p(
    "AliyunActionTrailReadOnlyAccess",
    "Provides read-only access to ActionTrail: looking up events.",
    '{"Version":"1","Statement":[{"Effect":"Allow","Action":["actiontrail:Describe*",'
    '"actiontrail:Get*","actiontrail:LookupEvents"],"Resource":"*"}]}',
)
