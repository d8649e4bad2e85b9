"""The WeChat platform's side of the protocol: sign and encrypt callbacks as WeChat's servers
do, and verify and open the replies. ``wxassist chat`` and the tests use it to talk to the
service exactly as WeChat would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from functions.common.clock import Clock, RandomSource, SecureRandom
from functions.common.errors import MalformedRequest, SignatureMismatch
from functions.common.safe_xml import cdata, parse_wechat_xml, text_field
from functions.common.settings import AccountConfig
from functions.common.wechat_crypto import MessageCipher, sha1_signature, signature_matches
from functions.common.wechat_protocol import DELIVERY_ATTEMPTS, DELIVERY_TIMEOUT_S, REDELIVERY_INTERVAL_S  # noqa: F401 - re-exported

MAX_REPLY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Callback:
    query: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class DeliveryResult:
    """What the platform made of a message's deliveries."""

    outcome: Literal["passive", "no_reply", "failed"]  # no_reply: "success", expect a push
    reply: dict[str, Any]
    attempts: int
    elapsed_s: float
    statuses: tuple[str, ...]  # per delivery: an HTTP status, or "timeout" / "unreachable"


def text_message_xml(*, to_user: str, from_user: str, content: str, msg_id: str, create_time: int) -> str:
    return (
        "<xml>"
        f"<ToUserName>{cdata(to_user)}</ToUserName>"
        f"<FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{create_time}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType>"
        f"<Content>{cdata(content)}</Content>"
        f"<MsgId>{msg_id}</MsgId>"
        "</xml>"
    )


def event_message_xml(*, to_user: str, from_user: str, event: str, create_time: int, event_key: str = "") -> str:
    return (
        "<xml>"
        f"<ToUserName>{cdata(to_user)}</ToUserName>"
        f"<FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{create_time}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType>"
        f"<Event>{cdata(event)}</Event>"
        f"<EventKey>{cdata(event_key)}</EventKey>"
        "</xml>"
    )


class PlatformSimulator:
    """Plays WeChat's servers for one account."""

    def __init__(self, account: AccountConfig, clock: Clock, random: RandomSource | None = None):
        self._account = account
        self._clock = clock
        self._random = random or SecureRandom()
        self._token = account.token.get_secret_value()

    def _timestamp_and_nonce(self) -> tuple[str, str]:
        return str(int(self._clock.now_s())), str(int.from_bytes(self._random.token_bytes(4), "big"))

    def callback(self, message_xml: str, *, safe_mode: bool = True) -> Callback:
        if not safe_mode:
            timestamp, nonce = self._timestamp_and_nonce()
            signature = sha1_signature(self._token, timestamp, nonce)
            return Callback({"signature": signature, "timestamp": timestamp, "nonce": nonce}, message_xml.encode())
        return self.sealed_callback(message_xml.encode("utf-8"))

    def sealed_callback(self, plaintext: bytes, *, receive_id: str | None = None) -> Callback:
        """Any bytes, encrypted and signed as WeChat would (addressed to ``receive_id``,
        default the account's own): hostile payloads reach the checks behind the signature."""
        cipher = MessageCipher(self._account.aes_key_bytes(), receive_id or self._account.appid, self._random)
        return self.envelope_callback(cipher.encrypt_bytes(plaintext))

    def envelope_callback(self, encrypted: str) -> Callback:
        """Any Encrypt value, in an envelope signed for it."""
        timestamp, nonce = self._timestamp_and_nonce()
        msg_signature = sha1_signature(self._token, timestamp, nonce, encrypted)
        query = {
            "signature": sha1_signature(self._token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": msg_signature,
        }
        body = f"<xml><ToUserName>{cdata(self._account.appid)}</ToUserName><Encrypt>{cdata(encrypted)}</Encrypt></xml>"
        return Callback(query, body.encode())

    def deliver(self, url: str, message_xml: str, **options: Any) -> DeliveryResult:
        """``deliver_async`` for synchronous callers."""
        return asyncio.run(self.deliver_async(url, message_xml, **options))

    async def deliver_async(
        self,
        url: str,
        message_xml: str,
        *,
        safe_mode: bool = True,
        attempts: int = DELIVERY_ATTEMPTS,
        timeout_s: float = DELIVERY_TIMEOUT_S,
        interval_s: float = REDELIVERY_INTERVAL_S,
        client: Any = None,
    ) -> DeliveryResult:
        """Deliver a message as WeChat does: wait ``timeout_s`` for each delivery, and on a
        timeout or any non-200 answer deliver it again, ``attempts`` times in all, the n-th
        about ``interval_s`` after the first. A 200 ends it: a reply, or none."""
        import httpx

        callback = self.callback(message_xml, safe_mode=safe_mode)
        started_s = time.monotonic()
        statuses: list[str] = []
        owned = client is None
        client = client or httpx.AsyncClient()
        try:
            for attempt in range(attempts):
                await asyncio.sleep(max(0.0, started_s + attempt * interval_s - time.monotonic()))
                try:
                    response = await client.post(url, params=callback.query, content=callback.body, timeout=timeout_s)
                except httpx.TimeoutException:
                    statuses.append("timeout")
                    continue
                except httpx.TransportError:
                    statuses.append("unreachable")
                    continue
                statuses.append(str(response.status_code))
                if response.status_code == 200:
                    reply = self.open_reply(response.content)
                    return DeliveryResult("passive" if reply else "no_reply", reply, attempt + 1,
                                          time.monotonic() - started_s, tuple(statuses))
        finally:
            if owned:
                await client.aclose()
        return DeliveryResult("failed", {}, attempts, time.monotonic() - started_s, tuple(statuses))

    def url_check(self, echostr: str, *, encrypted: bool = False) -> dict[str, str]:
        timestamp, nonce = self._timestamp_and_nonce()
        if encrypted:  # WeCom: the echostr is encrypted and signed with msg_signature
            cipher = MessageCipher(self._account.aes_key_bytes(), self._account.appid, self._random)
            sealed = cipher.encrypt(echostr)
            signature = sha1_signature(self._token, timestamp, nonce, sealed)
            return {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": sealed}
        signature = sha1_signature(self._token, timestamp, nonce)
        return {"signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": echostr}

    def open_reply(self, body: bytes | str) -> dict[str, Any]:
        """Verify and decrypt a passive reply, as WeChat does before showing it to the user.
        ``success`` or an empty body means no passive reply: an empty dict."""
        raw = body.encode() if isinstance(body, str) else body
        if raw.strip() in (b"", b"success"):
            return {}
        fields = parse_wechat_xml(raw, MAX_REPLY_BYTES)
        encrypted = text_field(fields, "Encrypt")
        if encrypted is None:
            return fields
        signature = text_field(fields, "MsgSignature", required=True) or ""
        timestamp = text_field(fields, "TimeStamp", required=True) or ""
        nonce = text_field(fields, "Nonce", required=True) or ""
        if not signature_matches(sha1_signature(self._token, timestamp, nonce, encrypted), signature):
            raise SignatureMismatch("reply signature does not match")
        xml = MessageCipher(self._account.aes_key_bytes(), self._account.appid).decrypt(encrypted)
        return parse_wechat_xml(xml, MAX_REPLY_BYTES)


def reply_text(fields: Mapping[str, Any]) -> str:
    if not fields:
        return ""
    kind = fields.get("MsgType")
    if kind == "text":
        return str(fields.get("Content") or "")
    if kind == "transfer_customer_service":
        return "[转接人工客服]"
    raise MalformedRequest(f"unexpected reply type {kind!r}")
