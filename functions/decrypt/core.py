"""Verify and open WeChat callbacks, hardened beyond wechatpy (see FIELD-NOTES):

* the body is capped before anything parses it, DOCTYPE/ENTITY refused (``safe_xml``);
* signatures compared in constant time; the timestamp must be within ±window of the
  injected clock and carry no leading zero, which together defeat moving characters between
  the timestamp and the nonce under the same signature;
* plain-mode bodies are parsed only after their signature verifies, and an account with an
  EncodingAESKey takes none unless configured to (a plain body is signed by nothing: a
  downgrade would let anyone who saw one signed URL forge messages for 5 minutes);
* the fields that become keys and log fields (FromUserName, MsgId, CreateTime) are short
  and printable;
* AES payloads are checked for base64, block size, padding, length, UTF-8 and appid.

wechatpy's own parser then types the decrypted message (text, voice, events such as
subscribe-by-QR), so we inherit its knowledge of WeChat's message kinds, not its parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wechatpy.enterprise.parser import parse_message as parse_wecom_message
from wechatpy.parser import parse_message as parse_mp_message

from functions.common.clock import Clock
from functions.common.errors import (
    BodyTooLarge,
    MalformedRequest,
    SignatureMismatch,
    StaleTimestamp,
    UnknownAccount,
)
from functions.common.records import InboundMessage
from functions.common.safe_xml import parse_wechat_xml, text_field
from functions.common.settings import AccountConfig
from functions.common.wechat_crypto import MessageCipher, sha1_signature, signature_matches

MAX_QUERY_FIELD_CHARS = 128
MAX_ECHOSTR_CHARS = 1024
MAX_KEY_FIELD_CHARS = 128  # openids are 28 characters, WeCom user ids up to 64, MsgIds 20 digits


def is_safe_mode(query: Mapping[str, str]) -> bool:
    """MP safe mode says ``encrypt_type=aes``; WeCom is always encrypted and sends msg_signature."""
    return query.get("encrypt_type") == "aes" or "msg_signature" in query


class CallbackVerifier:
    """Pure core of the decrypt function: no Ray, no HTTP, clock injected."""

    def __init__(
        self,
        accounts: Mapping[str, AccountConfig],
        clock: Clock,
        *,
        max_body_bytes: int,
        timestamp_window_s: int,
    ):
        self._accounts = dict(accounts)
        self._clock = clock
        self._max_body_bytes = max_body_bytes
        self._timestamp_window_s = timestamp_window_s

    def account(self, name: str) -> AccountConfig:
        account = self._accounts.get(name)
        if account is None:
            raise UnknownAccount(f"no account named {name[:64]!r}")
        return account

    # ---- GET: URL verification ---------------------------------------------------------

    def verify_url(self, account_name: str, query: Mapping[str, str]) -> str:
        """Answer the platform's URL check: the echostr, decrypted when it came encrypted."""
        account = self.account(account_name)
        timestamp, nonce = self._fresh_timestamp_and_nonce(query)
        echostr = _query_field(query, "echostr", MAX_ECHOSTR_CHARS)
        token = account.token.get_secret_value()
        if "msg_signature" in query:
            given = _query_field(query, "msg_signature", MAX_QUERY_FIELD_CHARS)
            _require_signature(sha1_signature(token, timestamp, nonce, echostr), given)
            return self._cipher(account).decrypt(echostr)
        given = _query_field(query, "signature", MAX_QUERY_FIELD_CHARS)
        _require_signature(sha1_signature(token, timestamp, nonce), given)
        return echostr

    # ---- POST: callbacks ---------------------------------------------------------------

    def open_callback(self, account_name: str, query: Mapping[str, str], body: bytes) -> InboundMessage:
        account = self.account(account_name)
        if len(body) > self._max_body_bytes:
            raise BodyTooLarge(f"body of {len(body)} bytes exceeds the {self._max_body_bytes}-byte cap")
        timestamp, nonce = self._fresh_timestamp_and_nonce(query)
        token = account.token.get_secret_value()
        if is_safe_mode(query):
            envelope = parse_wechat_xml(body, self._max_body_bytes)
            encrypted = text_field(envelope, "Encrypt")
            if not encrypted:
                raise MalformedRequest("safe-mode body has no <Encrypt>")
            given = _query_field(query, "msg_signature", MAX_QUERY_FIELD_CHARS)
            _require_signature(sha1_signature(token, timestamp, nonce, encrypted), given)
            xml = self._cipher(account).decrypt(encrypted)
            return self._to_message(account, xml, encrypted=True)
        if account.aes_key is not None and not account.plain_callbacks:
            raise SignatureMismatch("this account takes encrypted callbacks only; a plain-mode body is signed by nothing")
        given = _query_field(query, "signature", MAX_QUERY_FIELD_CHARS)
        _require_signature(sha1_signature(token, timestamp, nonce), given)
        return self._to_message(account, body, encrypted=False)

    # ---- helpers -----------------------------------------------------------------------

    def _cipher(self, account: AccountConfig) -> MessageCipher:
        if account.aes_key is None:
            raise MalformedRequest("this account is configured for plain mode only")
        return MessageCipher(account.aes_key_bytes(), account.appid)

    def _fresh_timestamp_and_nonce(self, query: Mapping[str, str]) -> tuple[str, str]:
        timestamp = _query_field(query, "timestamp", MAX_QUERY_FIELD_CHARS)
        nonce = _query_field(query, "nonce", MAX_QUERY_FIELD_CHARS)
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12 or timestamp.startswith("0"):
            raise MalformedRequest("timestamp must be decimal seconds")
        skew_s = abs(self._clock.now_s() - int(timestamp))
        if skew_s > self._timestamp_window_s:
            raise StaleTimestamp(f"timestamp is {skew_s:.0f} s from now; window is ±{self._timestamp_window_s} s")
        return timestamp, nonce

    def _to_message(self, account: AccountConfig, xml: bytes | str, *, encrypted: bool) -> InboundMessage:
        fields = parse_wechat_xml(xml, self._max_body_bytes)
        from_user = _key_field(fields, "FromUserName", required=True)
        to_user = _key_field(fields, "ToUserName", required=True)
        msg_type = (_key_field(fields, "MsgType", required=True) or "").lower()
        create_time = text_field(fields, "CreateTime", required=True) or ""
        if not create_time.isascii() or not create_time.isdigit() or len(create_time) > 12:
            raise MalformedRequest("CreateTime must be decimal seconds")
        typed = _typed_message(account, xml)
        content = text_field(fields, "Content")
        if msg_type == "voice":  # with speech recognition on, voice arrives as text too
            content = text_field(fields, "Recognition") or None
        return InboundMessage(
            account=account.name,
            to_user=to_user or "",
            from_user=from_user or "",
            create_time=int(create_time),
            msg_type=msg_type,
            msg_id=_key_field(fields, "MsgId"),
            content=content,
            event=getattr(typed, "event", None),
            event_key=_event_key(fields),
            agent_id=text_field(fields, "AgentID"),
            encrypted=encrypted,
        )


def _typed_message(account: AccountConfig, xml: bytes | str) -> Any:
    """wechatpy's view of the message (event names normalised, e.g. subscribe_scan)."""
    parse = parse_wecom_message if account.kind == "wecom" else parse_mp_message
    try:
        return parse(xml)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise MalformedRequest("message fields do not match any WeChat message kind") from exc


def _key_field(fields: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """A field that becomes part of a state key and of log lines: short and printable, so a
    message can neither bloat the store nor forge a log line."""
    value = text_field(fields, name, required=required)
    if value is not None and (len(value) > MAX_KEY_FIELD_CHARS or not value.isprintable()):
        raise MalformedRequest(f"<{name}> must be at most {MAX_KEY_FIELD_CHARS} printable characters")
    return value


def _event_key(fields: dict[str, Any]) -> str | None:
    key = fields.get("EventKey")
    return key if isinstance(key, str) else None


def _query_field(query: Mapping[str, str], name: str, max_chars: int) -> str:
    value = query.get(name)
    if not value:
        raise MalformedRequest(f"query parameter {name!r} is missing")
    if len(value) > max_chars:
        raise MalformedRequest(f"query parameter {name!r} is too long")
    return value


def _require_signature(expected_hex: str, given: str) -> None:
    if not signature_matches(expected_hex, given):
        raise SignatureMismatch("signature does not match")
