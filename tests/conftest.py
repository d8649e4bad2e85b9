"""Shared test helpers: published and pinned vectors, accounts built from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from functions.common.settings import AccountConfig

FIXTURES = Path(__file__).parent / "fixtures"

# Tests that trace say so (WXA_TRACE_EXPORTER=memory or file in their settings); the rest
# would write span files wherever the first replica built in this process pointed.
os.environ.setdefault("WXA_TRACE_EXPORTER", "none")


def load_vectors(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def wecom_vectors() -> dict:
    return load_vectors("wechat_vectors.json")


@pytest.fixture(scope="session")
def mp_vectors() -> dict:
    return load_vectors("wxassist_vectors.json")["mp"]


@pytest.fixture
def wecom_account(wecom_vectors) -> AccountConfig:
    wecom = wecom_vectors["wecom"]
    return AccountConfig(
        name="corp", kind="wecom", token=wecom["token"], aes_key=wecom["encoding_aes_key"], appid=wecom["receive_id"]
    )


@pytest.fixture
def mp_account(mp_vectors) -> AccountConfig:
    return AccountConfig(
        name="default", kind="mp", token=mp_vectors["token"], aes_key=mp_vectors["encoding_aes_key"], appid=mp_vectors["appid"]
    )
