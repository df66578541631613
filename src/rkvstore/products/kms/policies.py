"""KMS's system policies (docs/kms.md §3), in the kernel's one catalogue."""

from __future__ import annotations

from rkvstore.iam.system_policies import SYSTEM_POLICIES

_p = SYSTEM_POLICIES.add

ADMIN_ACCESS = _p(
    "AliyunKMSSecretAdminAccess",
    "Provides full access to KMS secrets.",
    '{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}',
)
USER_ACCESS = _p(
    "AliyunKMSSecretUserAccess",
    "Provides read access to KMS secrets and their values.",
    '{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:GetSecretValue",'
    '"kms:DescribeSecret","kms:ListSecretVersionIds","kms:ListSecrets"],"Resource":"*"}]}',
)
