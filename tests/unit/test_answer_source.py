"""Who answers a knowledge question and from whose facts: the account's answer mode, the
engine's languages and pace, the self-introduction, and the operator's own business data."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from functions.common.clock import ManualClock
from functions.common.errors import ConfigurationError
from functions.common.settings import Settings
from functions.common.text import question_language
from functions.ingress.answer_mode import MIN_ANSWER_TOKENS, AnswerModes
from functions.intent.business_info import HOME_FILE
from functions.intent.deployment import _tools, identity_text
from knowledge import SAMPLE_BUSINESS_INFO

ENGLISH_ONLY = {"languages": ["en"], "tokens_per_s": 20.0}  # the CPU demo model
CHINESE_GPU = {"languages": ["zh", "en"], "tokens_per_s": 40.0}  # a DeepSeek/Qwen on a GPU


class Described:
    """generate's describe(), as the ingress calls it: counts calls, can be down."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        if self.model is None:
            raise RuntimeError("generate is not up")
        return self.model


def generates(modes: AnswerModes, question: str, seconds_left: float | None, account: str = "default") -> bool:
    return asyncio.run(modes.generates(account, question, seconds_left))


def test_generate_and_extract_are_what_the_account_says_whatever_the_engine():
    modes = AnswerModes({"shop": "generate", "corp": "extract"}, Described(ENGLISH_ONLY), ManualClock(0))
    assert generates(modes, "运费怎么算", 0.1, "shop")
    assert not generates(modes, "how much is shipping", 30, "corp")
    assert modes.mode("unconfigured") == "auto"


def test_auto_generates_only_in_a_language_the_engine_writes():
    modes = AnswerModes({}, Described(ENGLISH_ONLY), ManualClock(0))
    assert not generates(modes, "运费怎么算", 4.0)  # the demo model cannot write Chinese: quote at once
    assert generates(modes, "how much is shipping", 4.0)
    chinese = AnswerModes({}, Described(CHINESE_GPU), ManualClock(0))
    assert generates(chinese, "运费怎么算", 4.0)


def test_auto_quotes_when_the_shortest_answer_cannot_fit_in_the_time_left():
    modes = AnswerModes({}, Described(CHINESE_GPU), ManualClock(0))
    needed = MIN_ANSWER_TOKENS / CHINESE_GPU["tokens_per_s"]
    assert generates(modes, "运费怎么算", needed)
    assert not generates(modes, "运费怎么算", needed * 0.99)
    assert generates(modes, "运费怎么算", None)  # no passive deadline (a push, a chat): the model answers


def test_auto_quotes_while_generate_is_down_and_asks_again_later():
    described = Described(None)
    clock = ManualClock(0)
    modes = AnswerModes({}, described, clock, refresh_s=30)
    assert not generates(modes, "how much is shipping", 4.0)
    described.model = ENGLISH_ONLY
    assert not generates(modes, "how much is shipping", 4.0) and described.calls == 1  # not asked again yet
    asyncio.run(clock.advance(30))
    assert generates(modes, "how much is shipping", 4.0) and described.calls == 2


@pytest.mark.parametrize(("question", "language"), [
    ("运费怎么算", "zh"), ("iPhone 15 能用吗", "zh"), ("how much is shipping", "en"), ("退货 policy?", "zh"),
    ("SKU-2231 in stock?", "en"), ("？？", "en"),
])
def test_the_language_an_answer_must_be_written_in(question, language):
    assert question_language(question) == language


def test_the_self_introduction_names_the_operator_never_the_sample(tmp_path):
    assert identity_text(Settings(home=tmp_path)) == \
        "您好，我是智能客服助手，可以根据我们的资料回答您的问题。需要人工服务时请发送“人工”。"
    named = Settings(home=tmp_path, assistant_name="小骑", company_name="骑迹单车")
    assert identity_text(named).startswith("您好，我是骑迹单车的小骑，可以根据骑迹单车的资料")
    assert identity_text(Settings(home=tmp_path, identity_text="我是小骑。")) == "我是小骑。"
    shutil.copyfile(SAMPLE_BUSINESS_INFO, tmp_path / HOME_FILE)  # the sample corpus's home
    assert "青禾家居" in identity_text(Settings(home=tmp_path))


def test_business_facts_are_answered_only_from_the_operators_own_file(tmp_path):
    """The sample company's hotline and stores are served only beside the sample corpus (which
    puts business.json into the home); any other home has no business-facts tool at all."""
    assert "business_info" not in _tools(Settings(home=tmp_path)).names
    shutil.copyfile(SAMPLE_BUSINESS_INFO, tmp_path / HOME_FILE)
    sample_home = _tools(Settings(home=tmp_path))
    assert "business_info" in sample_home.names
    assert "400-820-6688" in sample_home.answer("客服电话是多少").text
    own = tmp_path / "ours.json"
    own.write_text('{"company": "骑迹单车", "hotline": {"number": "021-5550-1234", "hours": "9:00–18:00", '
                   '"note": "节假日照常"}, "online_service": {"where": "小程序", "hours": "全天"}, '
                   '"showroom_hours": "8:00–20:00", "showrooms": []}', encoding="utf-8")
    theirs = _tools(Settings(home=tmp_path, business_info=own)).answer("客服电话是多少").text
    assert "021-5550-1234" in theirs and "400-820-6688" not in theirs


def test_a_business_file_with_few_facts_answers_with_those_and_leaves_the_rest_to_the_documents(tmp_path):
    from functions.intent.business_info import BusinessInfo

    minimal = tmp_path / "minimal.json"
    minimal.write_text('{"company": "骑迹单车", "hotline": {"number": "021-5550-1234"}}', encoding="utf-8")
    tool = BusinessInfo(minimal)
    assert tool.run(tool.parse("客服电话是多少")) == "客服热线：021-5550-1234"
    assert tool.parse("你们门店在哪") is None  # no showrooms in the file: the knowledge base answers
    not_an_object = tmp_path / "list.json"
    not_an_object.write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="must be a JSON object"):
        BusinessInfo(not_an_object)


class Named:
    def __init__(self, model_name: str, languages=None):
        self.model_name = model_name
        if languages:
            self.languages = languages


@pytest.mark.parametrize(("engine", "configured", "languages"), [
    (Named("smollm2-135m-instruct"), (), ("en",)),
    (Named("deepseek-r1-distill-qwen-7b"), (), ("zh", "en")),
    (Named("qwen2.5-7b-instruct"), (), ("zh", "en")),
    (Named("smollm2-135m-instruct", languages=("en", "fr")), (), ("en", "fr")),  # the engine says
    (Named("smollm2-135m-instruct"), ("zh",), ("zh",)),  # the operator says (WXA_GENERATE_LANGUAGES)
])
def test_engines_declare_the_languages_they_write(engine, configured, languages):
    from functions.generate.core import engine_languages

    assert engine_languages(engine, configured) == languages
