"""WeChat's API servers, emulated: what the push path talks to in tests and in `wxassist
emulate`. Real HTTP, WeChat's URLs, payloads and error codes:

* ``GET /cgi-bin/token`` (Official Account) and ``GET /cgi-bin/gettoken`` (WeCom);
* ``POST /cgi-bin/message/custom/send`` (Official Account) and ``POST /cgi-bin/message/send``
  (WeCom), with the customer-service rules: a user can be messaged within 48 hours of their
  last message (45015 after), a limited number of times per window (45047 over quota);
* an expired or unknown token answers 42001 / 40001, as WeChat does;
* faults on demand: the next N sends fail with a given code (45009 bursts), respond slowly,
  or drop the connection mid-response, after the platform delivered the message or before.

Every delivered message is recorded, so tests assert what users actually received.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request

from functions.common.clock import Clock, SystemClock

CUSTOMER_SERVICE_WINDOW_S = 48 * 3600
TOKEN_LIFETIME_S = 7200

OK = 0
INVALID_CREDENTIAL = 40001
INVALID_APPID = 40013
INVALID_SECRET = 40125
EXPIRED_TOKEN = 42001
RATE_LIMITED = 45009
OUTSIDE_WINDOW = 45015
OVER_QUOTA = 45047


@dataclass(frozen=True)
class Delivered:
    appid: str
    to_user: str
    text: str
    at_s: float
    channel: str = "push"  # "passive": the callback's reply; "push": the customer-service API
    msg_id: str = ""  # the message a passive reply answered (a push names none, as on WeChat)


@dataclass
class PlatformState:
    """The platform's memory. Thread-safe: the server thread and the test thread share it."""

    secrets_by_appid: dict[str, str]
    clock: Clock = field(default_factory=SystemClock)
    quota_per_window: int = 5
    delivered: list[Delivered] = field(default_factory=list)
    tokens_issued: int = 0
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    _last_message_s: dict[tuple[str, str], float] = field(default_factory=dict)
    _sent_in_window: dict[tuple[str, str], int] = field(default_factory=dict)
    _faults: list[int] = field(default_factory=list)
    _drops: list[bool] = field(default_factory=list)  # per dropped send: delivered first?
    delay_s: float = 0.0
    sends_in_flight: int = 0  # send requests received and not yet answered
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- what a test or the emulator's user side does ----------------------------------

    def user_wrote(self, appid: str, user: str) -> None:
        """A user messaged the account: the 48-hour window and the quota start afresh."""
        with self._lock:
            self._last_message_s[(appid, user)] = self.clock.now_s()
            self._sent_in_window[(appid, user)] = 0

    def fail_next(self, errcode: int, count: int = 1) -> None:
        with self._lock:
            self._faults.extend([errcode] * count)

    def drop_next(self, count: int = 1, *, after_delivering: bool = True) -> None:
        """The next ``count`` sends lose their connection mid-response; the platform delivers
        the message first (the nasty case: the sender cannot tell it went out) or not."""
        with self._lock:
            self._drops.extend([after_delivering] * count)

    def take_drop(self) -> bool | None:
        with self._lock:
            return self._drops.pop(0) if self._drops else None

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens = {token: (appid, 0.0) for token, (appid, _) in self._tokens.items()}

    def received(self, user: str) -> list[str]:
        with self._lock:
            return [message.text for message in self.delivered if message.to_user == user]

    def received_since(self, user: str, since_s: float) -> list[Delivered]:
        with self._lock:
            return [m for m in self.delivered if m.to_user == user and m.at_s >= since_s]

    def record_passive(self, appid: str, user: str, text: str, msg_id: str = "") -> None:
        with self._lock:
            self.delivered.append(Delivered(appid, user, text, self.clock.now_s(), channel="passive", msg_id=msg_id))

    # ---- what the HTTP endpoints do ----------------------------------------------------

    def issue_token(self, appid: str, secret: str) -> dict:
        with self._lock:
            if appid not in self.secrets_by_appid:
                return _error(INVALID_APPID, "invalid appid")
            if not secrets.compare_digest(self.secrets_by_appid[appid], secret):
                return _error(INVALID_SECRET, "invalid appsecret")
            token = secrets.token_urlsafe(24)
            self._tokens[token] = (appid, self.clock.now_s() + TOKEN_LIFETIME_S)
            self.tokens_issued += 1
            return {"access_token": token, "expires_in": TOKEN_LIFETIME_S}

    def send_text(self, token: str, user: str, text: str) -> dict:
        with self._lock:
            now_s = self.clock.now_s()
            issued = self._tokens.get(token)
            if issued is None:
                return _error(INVALID_CREDENTIAL, "invalid credential, access_token is invalid or not latest")
            appid, expires_s = issued
            if expires_s <= now_s:
                return _error(EXPIRED_TOKEN, "access_token expired")
            if self._faults:
                return _error(self._faults.pop(0), "injected fault")
            last_s = self._last_message_s.get((appid, user))
            if last_s is None or now_s - last_s > CUSTOMER_SERVICE_WINDOW_S:
                return _error(OUTSIDE_WINDOW, "response out of time limit or subscription is canceled")
            if self._sent_in_window.get((appid, user), 0) >= self.quota_per_window:
                return _error(OVER_QUOTA, "response count limit")
            self._sent_in_window[(appid, user)] = self._sent_in_window.get((appid, user), 0) + 1
            self.delivered.append(Delivered(appid, user, text, now_s))
            return _error(OK, "ok")


def _error(code: int, message: str) -> dict:
    return {"errcode": code, "errmsg": message}


class DroppedConnections:
    """ASGI middleware: a send picked by ``PlatformState.drop_next`` gets its status line and
    headers, then the connection closes before the body (uvicorn closes a response the app
    left incomplete). The client sees a response cut short, as on a flaky network."""

    def __init__(self, app, state: PlatformState):
        self._app = app
        self._state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/cgi-bin/message/"):
            return await self._app(scope, receive, send)
        after_delivering = self._state.take_drop()
        if after_delivering is None:
            return await self._app(scope, receive, send)
        if after_delivering:
            async def discard(message) -> None:
                return None

            await self._app(scope, receive, discard)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")]})


def platform_api_app(state: PlatformState) -> FastAPI:
    app = FastAPI(title="WeChat API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(DroppedConnections, state=state)

    async def delayed() -> None:
        if state.delay_s:
            await asyncio.sleep(state.delay_s)

    @app.get("/cgi-bin/token")
    async def token(grant_type: str = "", appid: str = "", secret: str = "") -> dict:
        await delayed()
        return state.issue_token(appid, secret)

    @app.get("/cgi-bin/gettoken")
    async def wecom_token(corpid: str = "", corpsecret: str = "") -> dict:
        await delayed()
        return state.issue_token(corpid, corpsecret)

    async def send(request: Request, access_token: str) -> dict:
        with state._lock:
            state.sends_in_flight += 1
        try:
            body = await request.json()  # the platform has the request: a slow answer, or a
            await delayed()  # sender that dies meanwhile, does not stop it delivering
            return state.send_text(access_token, str(body.get("touser", "")), str((body.get("text") or {}).get("content", "")))
        finally:
            with state._lock:
                state.sends_in_flight -= 1

    @app.post("/cgi-bin/message/custom/send")
    async def custom_send(request: Request, access_token: str = "") -> dict:
        return await send(request, access_token)

    @app.post("/cgi-bin/message/send")
    async def wecom_send(request: Request, access_token: str = "") -> dict:
        return await send(request, access_token)

    return app


class BackgroundServer:
    """Runs an ASGI app with uvicorn in a thread on 127.0.0.1; for tests and the emulator."""

    def __init__(self, app: FastAPI, port: int):
        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the emulator did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
