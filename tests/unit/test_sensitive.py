"""Sensitive words: the automaton, the tricks it sees through, and what the user gets."""

from __future__ import annotations

import json
import logging
import time

import pytest

from functions.emulator.platform import reply_text, text_message_xml
from functions.common.sensitive import SensitiveWordFilter, WordList, normalise_with_positions
from functions.common.settings import load_settings
from functions.generate.deployment import GenerateServer
from tests.fakes import EchoEngine
from tests.unit.ingress_stack import make_client, post

ABUSE = WordList("abuse", ("傻逼", "fuck"), input_action="refuse", output_action="mask")
BRAND = WordList("competitors", ("某某家居",), input_action="off", output_action="mask")


@pytest.fixture
def word_filter() -> SensitiveWordFilter:
    return SensitiveWordFilter([ABUSE, BRAND])


@pytest.mark.parametrize(
    "text",
    [
        "你是傻逼吗",
        "你是傻\u200b逼吗",  # zero-width space
        "你是傻\u200d\ufeff逼吗",  # zero-width joiner, BOM
        "你是傻 逼吗",
        "你是傻.逼吗",
        "你是傻*_*逼吗",
        "FUCK you",
        "ｆｕｃｋ you",  # full-width
        "f u c k",
        "f.u.c.k",
        "Ｆ－Ｕ－Ｃ－Ｋ",
    ],
)
def test_obfuscated_words_are_caught(word_filter, text):
    decision = word_filter.scan(text, "input")
    assert decision.action == "refuse" and decision.hits == {"abuse": 1}


@pytest.mark.parametrize("text", ["退货政策是什么", "this is hit or miss", "usb 接口坏了", "你好，某某家居怎么样"])
def test_ordinary_text_passes_input(word_filter, text):
    assert word_filter.scan(text, "input").action == "pass"


def test_masking_covers_the_original_span_and_keeps_the_rest(word_filter):
    decision = word_filter.scan("别理那个傻 逼，选某某家居不如选我们。FUCK!", "output")
    assert decision.action == "mask"
    assert decision.text == "别理那个* *，选****不如选我们。****!"
    assert decision.hits == {"abuse": 2, "competitors": 1}


def test_normalisation_remembers_where_each_character_came_from():
    folded, positions = normalise_with_positions("Ａ b\u200bⅠ")
    assert folded == "abi" and positions == [0, 2, 4]


def test_no_lists_means_everything_passes():
    assert SensitiveWordFilter([]).scan("傻逼", "input").action == "pass"


def test_the_bundled_list_loads_and_catches_the_common_insults():
    word_filter = SensitiveWordFilter(
        [WordList(c.name, c.all_words(), c.input_action, c.output_action) for c in load_settings().word_lists]
    )
    assert word_filter.scan("你个煞 笔", "input").action == "refuse"
    assert word_filter.scan("清洁时注意除去死角", "input").action == "pass"


# ---- through the ingress ----------------------------------------------------------------


def ask(client, home, content: str, msg_id: str):
    xml = text_message_xml(to_user="gh", from_user="o-user", content=content, msg_id=msg_id, create_time=int(time.time()))
    return reply_text(post(client, home, xml)[1])


def test_abusive_input_is_refused_without_generating_and_audited_without_content(home, caplog):
    generate = GenerateServer(engine_cls=EchoEngine, settings_overrides={"home": str(home)})
    client = make_client(home, generate=generate)
    with caplog.at_level(logging.INFO, logger="wxassist.audit"):
        reply = ask(client, home, "你们这群傻\u200b逼，退货政策是什么", "1")
    assert reply == "您的消息包含不文明用语，请修改后再发送。"
    assert generate._core._engine.calls == []
    (record,) = [r for r in caplog.records if r.name == "wxassist.audit"]
    audit = json.loads(record.getMessage())
    assert audit["event"] == "filtered" and audit["direction"] == "input" and audit["action"] == "refuse"
    assert audit["lists"] == {"abuse": 1} and "o-user" not in record.getMessage()
    assert "傻" not in record.getMessage() and "退货" not in record.getMessage()


def test_a_model_answer_with_a_listed_word_is_masked(home):
    client = make_client(home, engine_answer="青禾家居支持7天无理由退货，别听那些sb说的。", overrides={"min_support": 0})
    assert ask(client, home, "退货政策是什么", "2").startswith("青禾家居支持7天无理由退货，别听那些**说的。")


@pytest.mark.parametrize("text", ["你是傻\ufe0f逼吗", "f\u0332u\u0332c\u0332k\u0332"])
def test_variation_selectors_and_combining_marks_do_not_hide_a_word(word_filter, text):
    assert word_filter.scan(text, "input").action == "refuse"
