"""Fixtures for unit tests that drive the ingress in-process (tests/unit/ingress_stack.py)."""

from __future__ import annotations

import pytest

from functions.common.settings import ensure_dev_credentials
from tests.unit.ingress_stack import close_open_clients


@pytest.fixture(autouse=True)
def close_clients():
    yield
    close_open_clients()


@pytest.fixture
def home(tmp_path):
    ensure_dev_credentials(tmp_path)
    return tmp_path
