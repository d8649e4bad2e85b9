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
        self._cities = [store["city"] for store in self._data.get("showrooms", [])]

    @property
    def company(self) -> str:
        return str(self._data.get("company") or "")

    def parse(self, text: str) -> Mapping[str, Any] | None:
        folded = unicodedata.normalize("NFKC", text).strip()
        if len(folded) > MAX_QUESTION_CHARS:
            return None
        city = next((city for city in self._cities if city in folded), None)
        if _STORE.search(folded) and _WHERE.search(folded):
            return {"intent": "showroom_address", "city": city}
        if _HOURS.search(folded):
            return {"intent": "business_hours", "showroom": bool(city or _STORE.search(folded))}
        if _CONTACT.search(folded):
            return {"intent": "contact"}
        return None

    def run(self, arguments: Mapping[str, Any]) -> str:
        intent = arguments["intent"]
        data = self._data
        hotline = data["hotline"]
        if intent == "business_hours":
            if arguments.get("showroom"):
                return f"门店营业时间：{data['showroom_hours']}。客服热线 {hotline['number']}（{hotline['hours']}）。"
            online = data["online_service"]
            return (f"客服热线 {hotline['number']}：{hotline['hours']}，{hotline['note']}。\n"
                    f"在线人工客服（{online['where']}）：{online['hours']}。\n门店营业时间：{data['showroom_hours']}。")
        if intent == "contact":
            online = data["online_service"]
            return (f"客服热线：{hotline['number']}（{hotline['hours']}）\n在线客服：{online['where']}（{online['hours']}）\n"
                    f"客服邮箱：{data['email']}\n企业采购：{data['business_purchasing']['phone']}，"
                    f"{data['business_purchasing']['email']}")
        stores = data["showrooms"]
        wanted = [store for store in stores if store["city"] == arguments.get("city")]
        lines = [f"{store['name']}：{store['address']}" for store in wanted or stores]
        heading = "" if wanted else f"{data['company']}目前有 {len(stores)} 家门店：\n"
        return heading + "\n".join(lines) + f"\n营业时间：{data['showroom_hours']}。"


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
