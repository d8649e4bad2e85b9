"""Build the passive reply for one callback.

Text replies are cut into parts of at most 2048 UTF-8 bytes at sentence boundaries, never
inside a fenced code block (a block too big for one part is re-fenced in each part). The
first part goes back passively; later parts are pushed, or, for a ``passive-only`` account,
held for "继续" (functions/common/continuation.py): there every part leaves room for the
label and hint a held part is shown with, and a first part with more to come carries the
hint. Replies to safe-mode
callbacks are AES-encrypted and signed; plain-mode callbacks get plain XML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from functions.common.clock import Clock, RandomSource
from functions.common.continuation import hint_reserve_bytes
from functions.common.errors import UnknownAccount
from functions.common.records import InboundMessage, Reply
from functions.common.safe_xml import cdata
from functions.common.settings import AccountConfig
from functions.common.wechat_crypto import MessageCipher, sha1_signature

WECHAT_TEXT_LIMIT_BYTES = 2048
NO_PASSIVE_REPLY = "success"
NO_REPLY = Reply(body=NO_PASSIVE_REPLY, content_type="text/plain")  # WeChat: nothing to say passively
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…\n])|(?<=[.])(?=\s)")
_FENCE = "```"


_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_HEADING_MARK = re.compile(r"^#{1,6}\s+", re.MULTILINE)


def wechat_plain_text(text: str) -> str:
    """WeChat shows text replies verbatim: drop Markdown emphasis and heading marks (models
    such as DeepSeek write them constantly) everywhere except inside code blocks."""
    segments = text.split(_FENCE)
    for index in range(0, len(segments), 2):  # even segments are outside fences
        segments[index] = _HEADING_MARK.sub("", _BOLD.sub(lambda m: m.group(1) or m.group(2), segments[index]))
    return _FENCE.join(segments)


def render_answer_text(text: str, sources: Sequence[str]) -> str:
    """The user-visible answer: the model's text, then the knowledge-base documents it drew on."""
    body = wechat_plain_text(text).strip()
    if not sources:
        return body
    cited = "、".join(f"《{title}》" for title in dict.fromkeys(sources))
    return f"{body}\n\n参考：{cited}" if body else f"参考：{cited}"


def split_for_wechat(text: str, limit_bytes: int = WECHAT_TEXT_LIMIT_BYTES) -> list[str]:
    """Split into parts of at most ``limit_bytes`` UTF-8 bytes, on sentence boundaries."""
    parts: list[str] = []
    current = ""
    for unit in _units(text, limit_bytes):
        if _size(current + unit) <= limit_bytes:
            current += unit
            continue
        if current.strip():
            parts.append(current.strip())
        current = unit
    if current.strip():
        parts.append(current.strip())
    return parts


def _units(text: str, limit_bytes: int) -> list[str]:
    """Code blocks are atomic units; prose is split into sentences (hard-cut when huge)."""
    units: list[str] = []
    for index, segment in enumerate(text.split(_FENCE)):
        if index % 2 == 1:  # inside a fence: keep whole, or re-fence line groups
            units.extend(_code_units(segment, limit_bytes))
            continue
        for sentence in _SENTENCE_END.split(segment):
            units.extend(_hard_cut(sentence, limit_bytes))
    return [unit for unit in units if unit]


def _code_units(code: str, limit_bytes: int) -> list[str]:
    block = f"{_FENCE}{code}{_FENCE}"
    if _size(block) <= limit_bytes:
        return [block]
    language, _, body = code.partition("\n")
    opening, closing = f"{_FENCE}{language}\n", f"\n{_FENCE}"
    budget = limit_bytes - _size(opening) - _size(closing)
    groups: list[str] = []
    current = ""
    for line in body.splitlines(keepends=True):
        for piece in _hard_cut(line, budget):
            if current and _size(current + piece) > budget:
                groups.append(current)
                current = ""
            current += piece
    if current:
        groups.append(current)
    return [opening + group.rstrip("\n") + closing for group in groups]


def _hard_cut(text: str, limit_bytes: int) -> list[str]:
    """Last resort for a single sentence longer than a part: cut on character boundaries."""
    if _size(text) <= limit_bytes:
        return [text]
    pieces, current = [], ""
    for char in text:
        if _size(current + char) > limit_bytes:
            pieces.append(current)
            current = ""
        current += char
    return pieces + [current]


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


class ReplySealer:
    """Pure core of the encrypt function: clock and random source injected."""

    def __init__(
        self, accounts: Mapping[str, AccountConfig], clock: Clock, random: RandomSource, *, continue_hint: str = ""
    ):
        self._accounts = dict(accounts)
        self._clock = clock
        self._random = random
        self._continue_hint = continue_hint

    def text_reply(self, message: InboundMessage, text: str) -> Reply:
        account = self._accounts.get(message.account)
        holds_the_rest = account is not None and account.strategy == "passive-only"
        limit = WECHAT_TEXT_LIMIT_BYTES - (hint_reserve_bytes(self._continue_hint) if holds_the_rest else 0)
        parts = tuple(split_for_wechat(text, limit))
        if not parts:
            return NO_REPLY
        first = f"{parts[0]}\n\n{self._continue_hint}" if holds_the_rest and len(parts) > 1 else parts[0]
        return Reply(body=self._seal(message, self._text_xml(message, first)), parts=parts)

    def part_reply(self, message: InboundMessage, text: str) -> Reply:
        """One text already cut to size (a held part with its label): sealed as it is."""
        if _size(text) > WECHAT_TEXT_LIMIT_BYTES:  # held parts leave room by construction
            raise ValueError(f"a {_size(text)}-byte part is over WeChat's {WECHAT_TEXT_LIMIT_BYTES} bytes")
        return Reply(body=self._seal(message, self._text_xml(message, text)), parts=(text,))

    def _text_xml(self, message: InboundMessage, text: str) -> str:
        return self._reply_xml(message, "text", f"<Content>{cdata(text)}</Content>")

    def handoff_reply(self, message: InboundMessage, fallback_text: str) -> Reply:
        """Hand the conversation to the account's human agents (客服系统).

        Official Accounts do this with a ``transfer_customer_service`` reply; WeCom has no such
        reply, so it gets ``fallback_text`` instead.
        """
        account = self._accounts.get(message.account)
        if account is not None and account.kind == "wecom":
            return self.text_reply(message, fallback_text)
        xml = self._reply_xml(message, "transfer_customer_service", "")
        return Reply(body=self._seal(message, xml))

    def _reply_xml(self, message: InboundMessage, msg_type: str, payload: str) -> str:
        return (
            "<xml>"
            f"<ToUserName>{cdata(message.from_user)}</ToUserName>"
            f"<FromUserName>{cdata(message.to_user)}</FromUserName>"
            f"<CreateTime>{int(self._clock.now_s())}</CreateTime>"
            f"<MsgType>{cdata(msg_type)}</MsgType>"
            f"{payload}"
            "</xml>"
        )

    def _seal(self, message: InboundMessage, xml: str) -> str:
        if not message.encrypted:
            return xml
        account = self._accounts.get(message.account)
        if account is None:
            raise UnknownAccount(f"no account named {message.account!r}")
        timestamp = str(int(self._clock.now_s()))
        nonce = str(int.from_bytes(self._random.token_bytes(4), "big"))
        cipher = MessageCipher(account.aes_key_bytes(), account.appid, self._random)
        encrypted = cipher.encrypt(xml)
        signature = sha1_signature(account.token.get_secret_value(), timestamp, nonce, encrypted)
        return seal_envelope(encrypted, signature, timestamp, nonce)


def seal_envelope(encrypted: str, signature: str, timestamp: str, nonce: str) -> str:
    """The safe-mode envelope, byte-for-byte the layout WeChat and wechatpy use."""
    return (
        "<xml>\n"
        f"<Encrypt><![CDATA[{encrypted}]]></Encrypt>\n"
        f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>\n"
        f"<TimeStamp>{timestamp}</TimeStamp>\n"
        f"<Nonce><![CDATA[{nonce}]]></Nonce>\n"
        "</xml>"
    )
