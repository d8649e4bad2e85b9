"""Each stack's program runs once per session under mocks; tests read what it declared."""

from __future__ import annotations

import pytest

from infra.tests.stacks import StackRun, run_stack


@pytest.fixture(scope="session")
def dev() -> StackRun:
    return run_stack("dev")


@pytest.fixture(scope="session")
def prod() -> StackRun:
    return run_stack("prod")


@pytest.fixture(scope="session")
def on_prem() -> StackRun:
    """dev with its model bucket on an on-prem MinIO instead of S3."""
    return run_stack("dev", {"wxassist:object_store": "minio",
                             "wxassist:minio": {"endpoint": "minio.corp.internal:9000", "kms_key": "wxassist-models"}})
