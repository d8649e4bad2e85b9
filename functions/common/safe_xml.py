"""Parsing untrusted WeChat XML without trusting it.

Size is capped before any parsing; DOCTYPE and ENTITY declarations are refused outright
(WeChat never sends them, and they are how XXE and billion-laughs attacks start); the parser
runs with entities disabled as a second line. Every failure is a typed ``MalformedRequest``.
"""

from __future__ import annotations

import re
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict

from functions.common.errors import BodyTooLarge, ForbiddenXml, MalformedRequest

_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_wechat_xml(data: bytes | str, max_bytes: int) -> dict[str, Any]:
    """Parse ``<xml>…</xml>`` into a dict of its children (text, or nested dicts)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise BodyTooLarge(f"XML of {len(raw)} bytes exceeds the {max_bytes}-byte cap")
    if _DECLARATION.search(raw):
        raise ForbiddenXml("DOCTYPE and ENTITY declarations are not accepted")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest("XML is not UTF-8") from exc
    try:
        document = xmltodict.parse(text, disable_entities=True)
    except (ExpatError, ValueError) as exc:
        raise MalformedRequest("XML is not well-formed") from exc
    root = document.get("xml") if isinstance(document, dict) else None
    if not isinstance(root, dict):
        raise MalformedRequest("XML root must be a non-empty <xml> element")
    return root


def text_field(fields: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """A child element's text; nested elements and repeated elements are not text."""
    value = fields.get(name)
    if value is None:
        if required:
            raise MalformedRequest(f"missing <{name}>")
        return None
    if not isinstance(value, str):
        raise MalformedRequest(f"<{name}> must be text")
    return value


# Characters XML 1.0 forbids anywhere, CDATA included; model output can contain them.
_NOT_XML_CHAR = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def cdata(text: str) -> str:
    """Wrap text in CDATA; a ``]]>`` inside would end the section early, so split it."""
    clean = _NOT_XML_CHAR.sub("", text)
    return "<![CDATA[" + clean.replace("]]>", "]]]]><![CDATA[>") + "]]>"
