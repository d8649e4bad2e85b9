"""Business hours, contact and showroom lookup from the operator's structured data.

The data is the operator's own JSON file (``WXA_BUSINESS_INFO``, or ``business.json`` in the
service's home, where the bundled sample corpus puts its company's file beside it): hotline,
online service, e-mail, showroom hours and addresses. The answer is assembled from it, never
generated, so a phone number or an address is exactly what the company wrote down. Without
such a file the tool is not loaded at all: another company's hotline must never answer for
this one, and such questions go to the operator's knowledge base instead.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from functions.common.errors import ConfigurationError

HOME_FILE = "business.json"  # in the service's home: the operator's business facts
MAX_QUESTION_CHARS = 40  # a long message is a real question: leave it to retrieval

_STORE = re.compile(r"门店|实体店|线下店|体验店|展厅|体验馆|旗舰店|店")
_WHERE = re.compile(r"地址|在哪|哪里|什么地方|怎么去|有哪些|几家|有没有|有店")
_HOURS = re.compile(r"营业时间|几点(开门|关门|营业|下班|上班)|(开门|营业|上班|客服|人工)(时间|到几点)|几点到几点")
_CONTACT = re.compile(r"(客服|联系|人工|售后)(电话|热线|方式|邮箱)|电话(是)?多少|热线|怎么联系|联系方式|联系你们|邮箱是")


class BusinessInfo:
    name = "business_info"
    intents = ("business_hours", "contact", "showroom_address")

    def __init__(self, path: str | Path):
        source = Path(path)
        try:
            self._data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"business info {source} cannot be read: {type(exc).__name__}") from exc
        if not isinstance(self._data, dict):
            raise ConfigurationError(f"business info {source} must be a JSON object (see knowledge/structured/business.json)")
        showrooms = self._data.get("showrooms") or []
        self._stores = [store for store in showrooms if isinstance(store, dict)] if isinstance(showrooms, list) else []
        self._cities = [str(store["city"]) for store in self._stores if store.get("city")]

    @property
    def company(self) -> str:
        return str(self._data.get("company") or "")

    def parse(self, text: str) -> Mapping[str, Any] | None:
        folded = unicodedata.normalize("NFKC", text).strip()
        if len(folded) > MAX_QUESTION_CHARS:
            return None
        city = next((city for city in self._cities if city in folded), None)
        # A question the file has no facts for goes to the knowledge base, not to an empty answer.
        if _STORE.search(folded) and _WHERE.search(folded):
            return {"intent": "showroom_address", "city": city} if self._stores else None
        has_hotline = bool(_field(self._data, "hotline", "number"))
        if _HOURS.search(folded):
            known = has_hotline or _field(self._data, "showroom_hours")
            return {"intent": "business_hours", "showroom": bool(city or _STORE.search(folded))} if known else None
        if _CONTACT.search(folded):
            known = has_hotline or _field(self._data, "online_service", "where") or _field(self._data, "email")
            return {"intent": "contact"} if known else None
        return None

    def run(self, arguments: Mapping[str, Any]) -> str:
        """The answer, from the fields the operator's file has (every one is optional: a
        company without showrooms or an e-mail address simply says nothing about them)."""
        intent = arguments["intent"]
        hotline = _field(self._data, "hotline", "number")
        hotline_hours = _field(self._data, "hotline", "hours")
        hotline_note = _field(self._data, "hotline", "note")
        online_where = _field(self._data, "online_service", "where")
        online_hours = _field(self._data, "online_service", "hours")
        showroom_hours = _field(self._data, "showroom_hours")
        if intent == "business_hours":
            if arguments.get("showroom"):
                return _joined([f"门店营业时间：{showroom_hours}。" if showroom_hours else "",
                                f"客服热线 {hotline}" + (f"（{hotline_hours}）。" if hotline_hours else "。") if hotline else ""])
            return _joined([
                f"客服热线 {hotline}" + (f"：{hotline_hours}" if hotline_hours else "") + (f"，{hotline_note}" if hotline_note else "") + "。" if hotline else "",
                f"在线人工客服（{online_where}）：{online_hours}。" if online_where and online_hours else "",
                f"门店营业时间：{showroom_hours}。" if showroom_hours else "",
            ], "\n")
        if intent == "contact":
            return _joined([
                f"客服热线：{hotline}" + (f"（{hotline_hours}）" if hotline_hours else "") if hotline else "",
                f"在线客服：{online_where}" + (f"（{online_hours}）" if online_hours else "") if online_where else "",
                f"客服邮箱：{_field(self._data, 'email')}" if _field(self._data, "email") else "",
                "企业采购：" + "，".join(filter(None, (_field(self._data, "business_purchasing", "phone"),
                                                  _field(self._data, "business_purchasing", "email"))))
                if self._data.get("business_purchasing") else "",
            ], "\n")
        stores = self._stores
        wanted = [store for store in stores if store.get("city") == arguments.get("city")]
        lines = [f"{store.get('name', '')}：{store.get('address', '')}" for store in wanted or stores]
        company = _field(self._data, "company")
        heading = "" if wanted else f"{company}目前有 {len(stores)} 家门店：\n"
        return heading + "\n".join(lines) + (f"\n营业时间：{showroom_hours}。" if showroom_hours else "")


def _field(data: Mapping[str, Any], *path: str) -> str:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return str(value).strip() if isinstance(value, (str, int, float)) else ""


def _joined(parts: list[str], separator: str = "") -> str:
    return separator.join(part for part in parts if part)


def operator_business_info(settings) -> Path | None:
    """The operator's business facts: ``WXA_BUSINESS_INFO``, else ``business.json`` in the home
    (put there with the sample corpus, removed with it), else none."""
    if settings.business_info is not None:
        return Path(settings.business_info)
    path = settings.home_dir() / HOME_FILE
    return path if path.is_file() else None


def company_name(settings) -> str:
    """The operator's company name: ``WXA_COMPANY_NAME``, else their business facts', else none."""
    if settings.company_name:
        return settings.company_name
    path = operator_business_info(settings)
    if path is None:
        return ""
    try:
        return BusinessInfo(path).company
    except ConfigurationError:
        return ""
