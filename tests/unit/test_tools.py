"""Tools: the calculator, the business-info lookup, and the plugin interface."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from functions.common.errors import ConfigurationError
from functions.emulator.platform import reply_text, text_message_xml
from functions.common.records import InboundMessage, Route
from functions.generate.deployment import GenerateServer
from functions.intent.business_info import BusinessInfo
from functions.intent.calculator import Calculator
from functions.intent.core import IntentClassifier, IntentTexts
from functions.intent.tools import ToolBox, load_tools
from knowledge import SAMPLE_BUSINESS_INFO
from tests.fakes import EchoEngine
from tests.unit.ingress_stack import make_client, post


def calculate(text: str) -> str | None:
    calculator = Calculator()
    arguments = calculator.parse(text)
    return None if arguments is None else calculator.run(arguments)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("3+5*2", "3+5*2 = 13"),
        ("（12.5 - 2）÷ 3", "(12.5 - 2)/ 3 = 3.5"),
        ("100乘以1.5等于多少", "100*1.5 = 150"),
        ("2的10次方是多少", "2^10 = 1024"),
        ("１２３＋４５６", "123+456 = 579"),
        ("0.1+0.2", "0.1+0.2 = 0.3"),  # exact fractions: no 0.30000000000000004
        ("1/3等于多少", "1/3 = ≈0.3333333333"),
        ("-(-3)*2", "-(-3)*2 = 6"),
        ("10/0=", "这个算式没法计算：除数不能为 0。"),
        ("9^99", "这个算式没法计算：只支持不超过 64 的整数次方。"),
        ("2^64^64", "这个算式没法计算：结果太大了。"),  # 64^64 alone is over the size bound
        ("(1+2", "这个算式没法计算：算式不完整。"),
    ],
)
def test_the_calculator_computes_exactly_and_refuses_politely(text, answer):
    assert calculate(text) == answer


@pytest.mark.parametrize(
    "text",
    ["400-820-6688", "2024-01-15", "1/15", "退货政策是什么", "__import__('os').system('id')", "1e5+1", "3+", "a+b"],
)
def test_phone_numbers_dates_code_and_prose_are_not_calculations(text):
    assert Calculator().parse(text) is None


@pytest.mark.parametrize(
    ("text", "intent", "fact"),
    [
        ("营业时间", "business_hours", "9:00–21:00"),
        ("广州店几点关门", "business_hours", "10:00–21:00"),
        ("客服电话是多少", "contact", "400-820-6688"),
        ("上海的门店地址", "showroom_address", "青苗路 166 号"),
        ("你们在北京有店吗", "showroom_address", "目前有 6 家门店"),
    ],
)
def test_business_info_answers_from_the_structured_data(text, intent, fact):
    tool = BusinessInfo(SAMPLE_BUSINESS_INFO)
    arguments = tool.parse(text)
    assert arguments is not None and arguments["intent"] == intent
    assert fact in tool.run(arguments)


@pytest.mark.parametrize("text", ["我的订单在哪", "收货地址怎么改", "退货政策是什么", "营业执照" * 20])
def test_business_info_leaves_other_questions_alone(text):
    assert BusinessInfo(SAMPLE_BUSINESS_INFO).parse(text) is None


class Shouter:
    """A tool as a company would add one: declared intents, a pure parse and run."""

    name = "shouter"
    intents = ("shout",)

    def __init__(self, suffix: str = "!"):
        self._suffix = suffix

    def parse(self, text: str) -> Mapping[str, Any] | None:
        return {"word": text[len("喊 "):]} if text.startswith("喊 ") else None

    def run(self, arguments: Mapping[str, Any]) -> str:
        return str(arguments["word"]).upper() + self._suffix


def test_a_new_tool_is_an_import_path_and_options():
    box = load_tools(["tests.unit.test_tools:Shouter", "functions.intent.calculator:Calculator"], {"shouter": {"suffix": "!!"}})
    assert box.names == ("shouter", "calculator")
    answer = box.answer("喊 hello")
    assert (answer.tool, answer.intent, answer.text) == ("shouter", "shout", "HELLO!!")
    assert box.answer("3*3").text == "3*3 = 9" and box.answer("你好呀朋友") is None
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        load_tools(["functions.intent.nothing:Here"])


def test_intent_routes_tool_requests_before_the_knowledge_default():
    texts = IntentTexts(welcome="w", help="h", greeting="g", reset="r", handoff="o", unsupported="u")
    classifier = IntentClassifier(texts, ToolBox([Calculator(), BusinessInfo(SAMPLE_BUSINESS_INFO)]))

    def classify(content: str):
        return classifier.classify(InboundMessage("default", "gh", "o-u", 1, "text", msg_id="1", content=content))

    assert classify("3+5*2等于多少").route is Route.TOOL
    assert classify("客服电话是多少").reply.startswith("客服热线：400-820-6688")
    assert classify("退货政策是什么").route is Route.KNOWLEDGE


def test_tool_answers_cost_no_generation(home):
    generate = GenerateServer(engine_cls=EchoEngine, settings_overrides={"home": str(home)})
    client = make_client(home, generate=generate)
    xml = text_message_xml(to_user="gh", from_user="o-user", content="12*12是多少", msg_id="55", create_time=int(time.time()))
    assert reply_text(post(client, home, xml)[1]) == "12*12 = 144"
    assert generate.stats()["answers"] == 0
