"""The ingress's HTTP routes and the responses its failures become."""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from functions.common.records import Rejection
from observability.logs import log_event, logger


class Routes(Protocol):
    """What the routes call: the ingress deployment (``functions/ingress/deployment.py``)."""

    async def healthz(self) -> dict[str, str]: ...

    async def metrics(self) -> Response: ...

    async def verify_url(self, account: str, request: Request) -> Response: ...

    async def callback(self, account: str, request: Request) -> Response: ...


def http_app(ingress: Routes) -> FastAPI:
    app = FastAPI(title="wxassist", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return await ingress.healthz()

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return await ingress.metrics()

    @app.get("/wechat/{account}")
    async def verify_url(account: str, request: Request) -> Response:
        return await ingress.verify_url(account, request)

    @app.post("/wechat/{account}")
    async def callback(account: str, request: Request) -> Response:
        return await ingress.callback(account, request)

    return app


async def read_capped_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None once it passes ``max_bytes``: never buffer an attacker's 10 MB."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def log_failure(step: str, exc: BaseException) -> None:
    """The error type at ERROR; the traceback, which may quote message text, only at DEBUG."""
    logger().error("%s failed: %s", step, type(exc).__name__)
    logger().debug("%s traceback", step, exc_info=exc)


def unavailable(step: str, exc: BaseException) -> Response:
    log_failure(step, exc)
    return JSONResponse({"error": "Unavailable", "reason": "temporarily unavailable"}, status_code=503)


def rejected(account: str, rejection: Rejection) -> Response:
    log_event("rejected", account=account[:64], error=rejection.error, status=rejection.http_status)
    return JSONResponse({"error": rejection.error, "reason": rejection.reason}, status_code=rejection.http_status)


