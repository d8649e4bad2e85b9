"""Parsing untrusted WeChat XML without trusting it.

Size is capped before any parsing. DOCTYPE and ENTITY declarations are refused outright
(WeChat never sends them, and they are how XXE and billion-laughs attacks start): by the
parser itself, the moment it meets one, before any entity is defined or expanded. Text that
merely looks like a declaration inside CDATA (a user asking about HTML) is content, not
refused. Every failure is a typed ``MalformedRequest``.
"""

from __future__ import annotations

import re
from typing import Any
from xml.parsers import expat
from xml.parsers.expat import ExpatError

import xmltodict

from functions.common.errors import BodyTooLarge, ForbiddenXml, MalformedRequest


def _refuse_declaration(*_args) -> None:
    raise ForbiddenXml("DOCTYPE and ENTITY declarations are not accepted")


class _ExpatRefusingDeclarations:
    """The expat module as xmltodict uses it, making parsers that stop at a declaration."""

    @staticmethod
    def ParserCreate(*args, **kwargs):  # noqa: N802 - expat's name
        parser = expat.ParserCreate(*args, **kwargs)
        parser.StartDoctypeDeclHandler = _refuse_declaration
        parser.EntityDeclHandler = _refuse_declaration
        return parser


def parse_wechat_xml(data: bytes | str, max_bytes: int) -> dict[str, Any]:
    """Parse ``<xml>…</xml>`` into a dict of its children (text, or nested dicts)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise BodyTooLarge(f"XML of {len(raw)} bytes exceeds the {max_bytes}-byte cap")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest("XML is not UTF-8") from exc
    try:
        document = xmltodict.parse(text, expat=_ExpatRefusingDeclarations, disable_entities=True)
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
