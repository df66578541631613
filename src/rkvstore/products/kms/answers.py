"""How secrets and versions are answered (docs/kms.md §4): UTC times, stages, rotation state."""

from __future__ import annotations

import json
import time
from typing import Any

from rkvstore.products.kms import rules
from rkvstore.products.kms.store import SecretRow


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def arn(region: str, account_id: str, name: str) -> str:
    return f"acs:kms:{region}:{account_id}:secret/{name}"


def automatic_rotation(secret: SecretRow, instance_exists: bool) -> str:
    if not instance_exists:
        return "Invalid"  # its instance is gone: nothing left to rotate
    return "Enabled" if secret.rotation_enabled else "Disabled"


def rotation_fields(secret: SecretRow) -> dict[str, str]:
    """RotationInterval and NextRotationDate while rotation is on; LastRotationDate after one."""
    out: dict[str, str] = {}
    if secret.rotation_enabled and secret.rotation_interval is not None:
        out["RotationInterval"] = rules.seconds_text(secret.rotation_interval)
        if secret.next_rotation_at is not None:
            out["NextRotationDate"] = utc(secret.next_rotation_at)
    if secret.last_rotation_at is not None:
        out["LastRotationDate"] = utc(secret.last_rotation_at)
    return out


def tags_of(secret: SecretRow) -> dict[str, Any]:
    return {"Tag": json.loads(secret.tags)}
