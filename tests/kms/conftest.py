"""One server for the KMS tests that need no special setting: an instance of each kind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kms.kms_helpers import (
    CLUSTER,
    MASTER_SLAVE,
    STAND_ALONE,
    KmsDeployment,
    kms_deployment,
)


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsDeployment]:
    path = tmp_path_factory.mktemp("kms")
    with kms_deployment(path, (STAND_ALONE, MASTER_SLAVE, CLUSTER)) as made:
        yield made
