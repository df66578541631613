"""KMS parameter rules (docs/kms.md §4, §5): pure functions that return a value or raise.

Every refusal is KMS's ``InvalidParameter`` (its text names no parameter),
unless the contract names another code.
"""

from __future__ import annotations

import json
import re
import secrets as random
import string
from dataclasses import dataclass
from typing import Any, Final

from rkvstore.config import parse_interval
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.errors import ApiError
from rkvstore.products.kms import errors as kms_errors
from rkvstore.products.kvstore import account_rules

DOUBLE_USERS: Final = "DoubleUsers"
DUAL_PASSWORD: Final = "DualPassword"  # noqa: S105 - a mode's name
CLONE_SUFFIX: Final = "_clone"
CURRENT: Final = "ACSCurrent"
PREVIOUS: Final = "ACSPrevious"
PENDING: Final = "Pending"  # a rotation written down, not yet on every node

_SECRET_NAME: Final = re.compile(r"[A-Za-z0-9_/+=.\-@]{1,192}")
_VERSION_ID: Final = re.compile(r"[A-Za-z0-9\-_.]{1,64}")
_TAG: Final = re.compile(r"[A-Za-z0-9/\\_\-.+=:@]{1,128}")
MAX_ROTATION_SECONDS: Final = 8760 * 3600
MAX_GRACE_SECONDS: Final = 8760 * 3600
EXTENDED_CONFIG_MAX: Final = 1024
OTHER_SECRET_TYPES: Final = frozenset({"Generic", "Rds", "RAMCredentials", "ECS", "PolarDB"})
PRIVILEGES: Final = account_rules.PRIVILEGES
_PASSWORD_CLASSES: Final = (string.ascii_uppercase, string.ascii_lowercase, string.digits)
PASSWORD_LENGTH: Final = 32


def invalid() -> ApiError:
    return ApiError(kms_errors.INVALID_PARAMETER)


def check_secret_name(name: str) -> str:
    if not _SECRET_NAME.fullmatch(name) or name.startswith("acs/"):
        raise invalid()
    return name


def secret_name_of(value: str, region: str, account_id: str) -> str:
    """A SecretName parameter, or the ARN of one of the caller's own secrets."""
    if value.startswith("acs:"):
        prefix = f"acs:kms:{region}:{account_id}:secret/"
        if not value.startswith(prefix):
            raise ApiError(kms_errors.NOT_FOUND)  # another account's or region's: never say which
        value = value[len(prefix) :]
    return check_secret_name(value)


def canonical_secret_name(params: dict[str, Any], region: str, account_id: str) -> dict[str, Any]:
    """``SecretName`` as a name, whether the call gave the name or its ARN (``canonical``
    of the action table: RAM, the audit trail and the handler all see the name)."""
    value = params.get("SecretName")
    if not isinstance(value, str):
        return params
    return {**params, "SecretName": secret_name_of(value, region, account_id)}


def check_version_id(version_id: str) -> str:
    if not _VERSION_ID.fullmatch(version_id):
        raise invalid()
    return version_id


def rotation_interval(text: str, minimum: int) -> int:
    """RotationInterval in seconds: ``integer`` + ``d``/``h``/``m``/``s``, within bounds."""
    seconds = parse_interval(text)
    if seconds is None or not minimum <= seconds <= MAX_ROTATION_SECONDS:
        raise invalid()
    return seconds


def grace_period(value: object) -> int:
    """GracePeriod (DualPassword): ``0s`` to ``8760h``."""
    seconds = parse_interval(value) if isinstance(value, str) else None
    if seconds is None or seconds > MAX_GRACE_SECONDS:
        raise invalid()
    return seconds


def seconds_text(seconds: int) -> str:
    return f"{seconds}s"


def check_secret_type(secret_type: str | None) -> None:
    if secret_type == "Redis":  # noqa: S105 - a type's name
        return
    if secret_type is None or secret_type in OTHER_SECRET_TYPES:
        raise ApiError(kms_errors.TYPE_NOT_SUPPORTED)
    raise invalid()


def check_description(text: str | None) -> str:
    if text is not None and len(text) > 1024:
        raise invalid()
    return text or ""


def tags(text: str | None) -> list[dict[str, str]]:
    """``[{"TagKey":"k","TagValue":"v"}]``, at most 20."""
    if text is None:
        return []
    found = _json(text)
    if not isinstance(found, list) or len(found) > 20:
        raise invalid()
    out: list[dict[str, str]] = []
    for tag in found:
        if not isinstance(tag, dict) or set(tag) != {"TagKey", "TagValue"}:
            raise invalid()
        key, value = tag["TagKey"], tag["TagValue"]
        if not isinstance(key, str) or not isinstance(value, str):
            raise invalid()
        if not _TAG.fullmatch(key) or not _TAG.fullmatch(value):
            raise invalid()
        if key.lower().startswith(("aliyun", "acs:")):
            raise invalid()
        out.append({"TagKey": key, "TagValue": value})
    return out


FILTER_KEYS: Final = frozenset(
    {"SecretName", "Description", "SecretType", "TagKey", "TagValue", "DKMSInstanceId", "Creator"}
)


def filters(text: str | None) -> dict[str, list[str]]:
    """ListSecrets' ``Filters``: key -> values (ORed); keys ANDed."""
    if text is None:
        return {}
    found = _json(text)
    if not isinstance(found, list) or len(found) > len(FILTER_KEYS):
        raise invalid()
    out: dict[str, list[str]] = {}
    for entry in found:
        if not isinstance(entry, dict) or set(entry) != {"Key", "Values"}:
            raise invalid()
        key, values = entry["Key"], entry["Values"]
        if key not in FILTER_KEYS or not isinstance(values, list) or not 1 <= len(values) <= 10:
            raise invalid()
        if not all(isinstance(v, str) and 0 < len(v) <= 192 for v in values):
            raise invalid()
        out.setdefault(key, []).extend(values)
    return out


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: '[' * 1000
        raise invalid() from exc


# --------------------------------------------------------------------------- ExtendedConfig


@dataclass(frozen=True)
class RedisConfig:
    """A Redis secret's ExtendedConfig, checked (docs/kms.md §5)."""

    sub_type: str
    instance_id: str
    region_id: str
    account_name: str
    clone_account_name: str | None
    privilege: str | None
    use_existing: bool
    grace_period: int | None
    custom_data: dict[str, Any]

    @property
    def account_names(self) -> list[str]:
        return [self.account_name] + ([self.clone_account_name] if self.clone_account_name else [])

    def answered(self) -> str:
        """As DescribeSecret and CreateSecret answer it: compact JSON."""
        body: dict[str, Any] = {"SecretSubType": self.sub_type, "AccountName": self.account_name}
        if self.clone_account_name:
            body["CloneAccountName"] = self.clone_account_name
        if self.privilege:
            body["AccountPrivilege"] = self.privilege
        body["InstanceId"] = self.instance_id
        body["RegionId"] = self.region_id
        if self.sub_type == DUAL_PASSWORD:
            body["UseExistingAccount"] = self.use_existing
            if self.grace_period is not None:
                body["GracePeriod"] = seconds_text(self.grace_period)
        body["CustomData"] = self.custom_data
        return json.dumps(body, separators=(",", ":"))


_DOUBLE_KEYS: Final = frozenset(
    {
        "SecretSubType",
        "InstanceId",
        "RegionId",
        "AccountName",
        "CloneAccountName",
        "AccountPrivilege",
        "CustomData",
    }
)
_DUAL_KEYS: Final = (_DOUBLE_KEYS - {"CloneAccountName"}) | {"UseExistingAccount", "GracePeriod"}


def extended_config(text: str, region: str) -> RedisConfig:
    if len(text) > EXTENDED_CONFIG_MAX:
        raise invalid()
    found = _json(text)
    if not isinstance(found, dict):
        raise invalid()
    sub_type = found.get("SecretSubType")
    if sub_type not in (DOUBLE_USERS, DUAL_PASSWORD):
        raise invalid()
    if not set(found) <= (_DOUBLE_KEYS if sub_type == DOUBLE_USERS else _DUAL_KEYS):
        raise invalid()
    instance_id, region_id, name = (
        found.get("InstanceId"),
        found.get("RegionId"),
        found.get("AccountName"),
    )
    if not all(isinstance(v, str) and v for v in (instance_id, region_id, name)):
        raise invalid()
    assert isinstance(instance_id, str) and isinstance(region_id, str) and isinstance(name, str)
    if region_id != region:
        raise invalid()
    custom = found.get("CustomData", {})
    if not isinstance(custom, dict) or len(custom) > 10:
        raise invalid()
    privilege = found.get("AccountPrivilege")
    if privilege is not None and privilege not in PRIVILEGES:
        raise invalid()
    if sub_type == DOUBLE_USERS:
        _check_new_name(name, instance_id)
        if len(name) > account_rules.ACCOUNT_NAME_MAX - len(CLONE_SUFFIX):
            raise invalid()
        if found.get("CloneAccountName") != name + CLONE_SUFFIX or privilege is None:
            raise invalid()
        return RedisConfig(
            sub_type,
            instance_id,
            region_id,
            name,
            name + CLONE_SUFFIX,
            privilege,
            False,
            None,
            custom,
        )
    use_existing = found.get("UseExistingAccount", False)
    if not isinstance(use_existing, bool):
        raise invalid()
    if use_existing:
        if name == MANAGEMENT_USER:
            raise invalid()
        try:
            account_rules.check_addressable_name(name, instance_id)
        except ApiError as exc:
            raise invalid() from exc
    else:
        _check_new_name(name, instance_id)
        if privilege is None:
            raise invalid()
    grace = found.get("GracePeriod")
    return RedisConfig(
        sub_type,
        instance_id,
        region_id,
        name,
        None,
        privilege,
        use_existing,
        None if grace is None else grace_period(grace),
        custom,
    )


def _check_new_name(name: str, instance_id: str) -> None:
    try:
        account_rules.check_creatable_name(name, instance_id)
    except ApiError as exc:
        raise invalid() from exc


# --------------------------------------------------------------------------- passwords


def new_password() -> str:
    """32 characters from A-Z a-z 0-9, at least one of each (docs/kms.md §5)."""
    alphabet = string.ascii_letters + string.digits
    for _ in range(100):
        password = "".join(random.choice(alphabet) for _ in range(PASSWORD_LENGTH))
        if all(any(c in cls for c in password) for cls in _PASSWORD_CLASSES):
            return password
    raise AssertionError("no password in 100 draws")  # pragma: no cover - p ~ 1e-300


def stored_config(text: str) -> dict[str, Any]:
    """A secret's ExtendedConfig as stored (written by ``RedisConfig.answered``)."""
    found = json.loads(text)
    assert isinstance(found, dict)
    return found


def stored_account_names(text: str) -> list[str]:
    config = stored_config(text)
    return [str(config["AccountName"])] + (
        [str(config["CloneAccountName"])] if config.get("CloneAccountName") else []
    )
