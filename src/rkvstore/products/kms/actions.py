"""KMS's secret actions (2016-01-20), declared once: parameters, RAM action, resource, access."""

from __future__ import annotations

from typing import Final

from rkvstore.errors import ErrorSpec
from rkvstore.products.kms import errors as kms_errors
from rkvstore.products.kms import manage, secrets
from rkvstore.services.audit import Trail
from rkvstore.services.params import Param
from rkvstore.services.registry import ActionSpec, SpecMaker

VERSION: Final = "2016-01-20"
ONE_SECRET = "secret/{SecretName}"  # noqa: S105 - a resource path
ALL_SECRETS = "secret/*"

SECRET_NAME = Param("SecretName", required=True)
PAGE_NUMBER = Param("PageNumber", "int", default=1, min_value=1, max_value=10**9)
FETCH_TAGS = Param("FetchTags", "bool", default=False)

# The kernel's answers that KMS gives its own way (errors.TRANSLATED).
TRANSLATED: Final[dict[str, ErrorSpec]] = kms_errors.TRANSLATED


_spec = SpecMaker(VERSION, "kms", trail=Trail("Kms", {"secret": "ACS::KMS::Secret"}))


def actions() -> list[ActionSpec]:
    return [
        _spec(
            "CreateSecret",
            secrets.create_secret,
            "create",
            ONE_SECRET,
            SECRET_NAME,
            Param("SecretData", "secret", required=True),
            Param("VersionId", required=True),
            Param("SecretType"),
            Param("ExtendedConfig", required=True),
            Param("SecretDataType"),
            Param("EnableAutomaticRotation", "bool", default=False),
            Param("RotationInterval"),
            Param("Description"),
            Param("Tags"),
            Param("Policy"),
        ),
        _spec(
            "GetSecretValue",
            manage.get_secret_value,
            "read",
            ONE_SECRET,
            SECRET_NAME,
            Param("VersionStage"),
            Param("VersionId"),
            Param("FetchExtendedConfig", "bool", default=False),
            Param("DryRun", "bool", default=False),
        ),
        _spec(
            "DescribeSecret", manage.describe_secret, "read", ONE_SECRET, SECRET_NAME, FETCH_TAGS
        ),
        _spec(
            "ListSecrets",
            manage.list_secrets,
            "list",
            ALL_SECRETS,
            PAGE_NUMBER,
            Param("PageSize", "int", default=10, min_value=1, max_value=100),
            FETCH_TAGS,
            Param("Filters"),
        ),
        _spec(
            "ListSecretVersionIds",
            manage.list_secret_version_ids,
            "list",
            ONE_SECRET,
            SECRET_NAME,
            Param("IncludeDeprecated", "bool", default=False),
            PAGE_NUMBER,
            Param("PageSize", "int", default=20, min_value=1, max_value=100),
        ),
        _spec(
            "RotateSecret",
            manage.rotate_secret,
            "update",
            ONE_SECRET,
            SECRET_NAME,
            Param("VersionId", required=True),
        ),
        _spec(
            "UpdateSecretRotationPolicy",
            manage.update_secret_rotation_policy,
            "update",
            ONE_SECRET,
            SECRET_NAME,
            Param("EnableAutomaticRotation", "bool", required=True),
            Param("RotationInterval"),
            Param("GracePeriod"),
        ),
        _spec(
            "DeleteSecret",
            manage.delete_secret,
            "delete",
            ONE_SECRET,
            SECRET_NAME,
            Param("ForceDeleteWithoutRecovery", "bool", default=False),
            Param("RecoveryWindowInDays", "int", default=30, min_value=-(10**9), max_value=10**9),
        ),
        _spec("RestoreSecret", manage.restore_secret, "update", ONE_SECRET, SECRET_NAME),
    ]
