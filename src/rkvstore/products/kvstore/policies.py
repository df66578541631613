"""R-kvstore's system policies, in the kernel's one catalogue (``iam.system_policies``).

``AliyunKvstoreReadOnlyAccess`` allows ``kvstore:Describe*``: a read-only action
is named ``Describe…``, or this policy changes with it.
"""

from __future__ import annotations

from rkvstore.iam.system_policies import SYSTEM_POLICIES

_p = SYSTEM_POLICIES.add

FULL_ACCESS = _p(
    "AliyunKvstoreFullAccess",
    "Provides full access to ApsaraDB for Redis (KVStore) via Management Console.",
    '{"Version":"1","Statement":[{"Effect":"Allow","Action":"kvstore:*","Resource":"*"}]}',
)
READ_ONLY_ACCESS = _p(
    "AliyunKvstoreReadOnlyAccess",
    "Provides read-only access to ApsaraDB for Redis (KVStore) via Management Console.",
    '{"Version":"1","Statement":[{"Effect":"Allow","Action":"kvstore:Describe*","Resource":"*"}]}',
)
