"""The Redis users rkvstore itself knows on every node, whatever the product."""

from __future__ import annotations

from typing import Final

# rkvstore's own Redis user on every node. It is never an account: it cannot be
# created, listed, changed or deleted through the API.
MANAGEMENT_USER: Final = "rkvstore_mgmt"

# Redis's built-in user; with the instance ID it makes the instance's two
# default ("Super") accounts.
DEFAULT_USER: Final = "default"
