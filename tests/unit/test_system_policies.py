"""The catalogue of system policies: what each product declares, once."""

from __future__ import annotations

import pytest

from rkvstore.iam.system_policies import SystemPolicies
from rkvstore.products import SYSTEM_POLICIES


def test_a_name_is_declared_once() -> None:
    catalogue = SystemPolicies()
    catalogue.add("AliyunXFullAccess", "x", '{"Version":"1","Statement":[]}')
    with pytest.raises(ValueError, match="AliyunXFullAccess declared twice"):
        catalogue.add("AliyunXFullAccess", "y", '{"Version":"1","Statement":[]}')
    assert dict(catalogue) == {"AliyunXFullAccess": ("x", '{"Version":"1","Statement":[]}')}


def test_the_products_declare_theirs() -> None:
    assert sorted(SYSTEM_POLICIES) == [
        "AliyunActionTrailFullAccess",
        "AliyunActionTrailReadOnlyAccess",
        "AliyunKMSSecretAdminAccess",
        "AliyunKMSSecretUserAccess",
        "AliyunKvstoreFullAccess",
        "AliyunKvstoreReadOnlyAccess",
    ]


def test_a_code_is_catalogued_once() -> None:
    from rkvstore.errors import CATALOGUE

    with pytest.raises(ValueError, match="error code InvalidParameter catalogued twice"):
        CATALOGUE.add("InvalidParameter", 400, "another text")
