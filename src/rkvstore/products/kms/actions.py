"""KMS's secret actions (2016-01-20), declared once: parameters, RAM action, resource, access."""

from __future__ import annotations

from typing import Final

from rkvstore.errors import ErrorSpec
from rkvstore.products.kms import errors as kms_errors
from rkvstore.products.kms import manage, rules, secrets
from rkvstore.services.audit import Trail
from rkvstore.services.params import Param
from rkvstore.services.registry import AccessLevel, ActionSpec, Handler, SpecMaker

VERSION: Final = "2016-01-20"
ONE_SECRET = "secret/{SecretName}"  # noqa: S105 - a resource path
ALL_SECRETS = "secret/*"

SECRET_NAME = Param("SecretName", required=True)
PAGE_NUMBER = Param("PageNumber", "int", default=1, min_value=1, max_value=10**9)
FETCH_TAGS = Param("FetchTags", "bool", default=False)
# Tags (20 of 2 x 128 characters) and Filters (7 keys of 10 values) fit well within.
JSON_MAX: Final = 8192

# The kernel's answers that KMS gives its own way (errors.TRANSLATED).
TRANSLATED: Final[dict[str, ErrorSpec]] = kms_errors.TRANSLATED


_make = SpecMaker(VERSION, "kms", trail=Trail("Kms", {"secret": "ACS::KMS::Secret"}))


def _spec(
    name: str, handler: Handler, level: AccessLevel, resource: str, *params: Param
) -> ActionSpec:
    """Everywhere but CreateSecret, SecretName may be the secret's ARN: it is made the
    name before RAM sees it (else a Deny on the name would miss the ARN)."""
    named = name != "CreateSecret" and SECRET_NAME in params
    canonical = rules.canonical_secret_name if named else None
    return _make(name, handler, level, resource, *params, canonical=canonical)


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
            Param("Tags", max_length=JSON_MAX),
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
            Param("Filters", max_length=JSON_MAX),
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
