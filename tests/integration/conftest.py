"""Real servers for integration tests, started here and stopped here, on 127.0.0.1 only."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_uri(tmp_path_factory) -> str:
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        yield server.uri


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS ``weed mini``) for the session; tests make their own buckets."""
    from functions.model_store.local_s3 import LocalS3Server

    with LocalS3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server
