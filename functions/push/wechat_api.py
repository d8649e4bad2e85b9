"""Customer-service sends through wechatpy's clients, pointed at ``WXA_WECHAT_API_BASE``
(the real platform, or the emulator). The access token lives in the shared state store, so
every replica uses one token and a refresh by one serves all; wechatpy itself refetches it on
40001/42001 and retries once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
from wechatpy.client import WeChatClient as OfficialAccountClient
from wechatpy.enterprise.client import WeChatClient as WeComClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

from functions.common.errors import ConfigurationError
from functions.common.settings import AccountConfig
from functions.common.state import StateStore
from functions.push.core import SendAmbiguous, SendFailed, SendRejected

TOKEN_KEY_PREFIX = "wxa:token:"
REQUEST_TIMEOUT_S = 10


class StateStoreSession(SessionStorage):
    """wechatpy's session storage over our state store: tokens shared across replicas."""

    def __init__(self, store: StateStore):
        self._store = store

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._store.get(TOKEN_KEY_PREFIX + key)
        return default if raw is None else json.loads(raw)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        # Refresh a minute early, so no replica sends with a token about to lapse.
        self._store.set(TOKEN_KEY_PREFIX + key, json.dumps(value), max((ttl or 7200) - 60, 1))

    def delete(self, key: str) -> None:
        self._store.delete(TOKEN_KEY_PREFIX + key)


class _TimeoutSession(requests.Session):
    """wechatpy fetches tokens with no timeout: a token endpoint that never answers would hold
    the outbox drain forever. Every request gets one."""

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return super().request(*args, **kwargs)


def _official_account_client(api_base: str) -> type:
    class Client(OfficialAccountClient):
        API_BASE_URL = f"{api_base}/cgi-bin/"

        def fetch_access_token(self) -> dict:  # wechatpy hard-codes the host here
            return self._fetch_access_token(
                url=f"{api_base}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
            )

    return Client


def _wecom_client(api_base: str) -> type:
    class Client(WeComClient):
        API_BASE_URL = f"{api_base}/cgi-bin/"

        def fetch_access_token(self) -> dict:
            return self._fetch_access_token(
                url=f"{api_base}/cgi-bin/gettoken", params={"corpid": self.corp_id, "corpsecret": self.secret}
            )

    return Client


def _never_connected(exc: requests.RequestException) -> bool:
    """True only when no byte of the request can have reached the platform."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.ProxyError)):
        return True  # the connection (or its TLS handshake) was never made
    if not isinstance(exc, requests.ConnectionError):
        return False
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", cause), urllib3.exceptions.NewConnectionError)


class WeChatSender:
    def __init__(self, accounts: Mapping[str, AccountConfig], store: StateStore, api_base: str):
        self._accounts = dict(accounts)
        self._session = StateStoreSession(store)
        self._api_base = api_base.rstrip("/")
        self._clients: dict[str, Any] = {}

    def send_text(self, account: str, to_user: str, text: str) -> None:
        config = self._accounts.get(account)
        if config is None:
            raise SendRejected(None, f"no account named {account!r}")
        client = self._client(config)
        try:
            # The token first, on its own: a failure here cannot have sent the message, so it
            # is retried, never mistaken for a send that may have gone out.
            client.access_token  # noqa: B018 - fetches and caches the token when missing
        except WeChatClientException as exc:
            raise SendFailed(f"cannot get an access token: {exc.errcode or 'HTTP error'}") from None
        except (requests.RequestException, ValueError) as exc:
            raise SendFailed(f"cannot get an access token: {type(exc).__name__}") from None
        try:
            if config.kind == "wecom":
                client.message.send_text(config.agent_id, to_user, text)
            else:
                client.message.send_text(to_user, text)
        except WeChatClientException as exc:
            if exc.errcode is None:  # an HTTP error status: the request was answered, not sent
                raise SendFailed(f"HTTP error from the platform: {exc.response.status_code if exc.response is not None else '?'}") from None
            raise SendRejected(int(exc.errcode), str(exc.errmsg)) from None
        except requests.RequestException as exc:
            if _never_connected(exc):
                raise SendFailed(f"cannot reach the platform: {type(exc).__name__}") from None
            # The request went out (a read timeout, a connection dropped mid-response): the
            # platform may have delivered the message, and WeChat offers no way to ask.
            raise SendAmbiguous(f"no complete answer from the platform: {type(exc).__name__}") from None

    def _client(self, config: AccountConfig) -> Any:
        client = self._clients.get(config.name)
        if client is None:
            if config.secret is None:
                raise ConfigurationError(f"account {config.name!r} needs its AppSecret (WXA_WECHAT_SECRET) to push")
            secret = config.secret.get_secret_value()
            if config.kind == "wecom":
                if config.agent_id is None:
                    raise ConfigurationError(f"WeCom account {config.name!r} needs its agent id to push")
                client = _wecom_client(self._api_base)(config.appid, secret, session=self._session, timeout=REQUEST_TIMEOUT_S)
            else:
                client = _official_account_client(self._api_base)(config.appid, secret, session=self._session, timeout=REQUEST_TIMEOUT_S)
            client._http = _TimeoutSession()
            self._clients[config.name] = client
        return client
