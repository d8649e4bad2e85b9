from __future__ import annotations

import pytest

from functions.common.records import InboundMessage, Route
from functions.intent.core import IntentClassifier, IntentTexts

TEXTS = IntentTexts(
    welcome="欢迎", help="帮助", greeting="您好", reset="已重置", handoff="转人工", unsupported="仅支持文字",
    menu={"MENU_RETURNS": "退货政策是什么？"},
)
CLASSIFIER = IntentClassifier(TEXTS)


def text(content: str, msg_type: str = "text") -> InboundMessage:
    return InboundMessage("default", "gh", "o-user", 1, msg_type, msg_id="1", content=content)


def event(name: str, key: str | None = None) -> InboundMessage:
    return InboundMessage("default", "gh", "o-user", 1, "event", event=name, event_key=key)


@pytest.mark.parametrize(
    ("content", "route"),
    [
        ("你好", Route.GREETING),
        ("您好！", Route.GREETING),
        ("Hello", Route.GREETING),
        ("ｈｉ", Route.GREETING),  # full-width folds to hi
        ("在吗？", Route.GREETING),
        ("/reset", Route.COMMAND),
        ("/help", Route.COMMAND),
        ("／ｒｅｓｅｔ", Route.COMMAND),  # full-width slash and letters
        ("/unknown", Route.COMMAND),
        ("人工", Route.HANDOFF),
        ("我要转人工客服", Route.HANDOFF),
        ("谢谢", Route.CHITCHAT),
        ("哈哈哈", Route.CHITCHAT),
        ("你是谁", Route.CHITCHAT),
        ("你们的退货政策是什么？", Route.KNOWLEDGE),
        ("沙发怎么保养", Route.KNOWLEDGE),
        ("客服电话多少", Route.KNOWLEDGE),  # mentions 客服 but asks a question
    ],
)
def test_text_routes(content, route):
    assert CLASSIFIER.classify(text(content)).route is route


def test_thanks_and_goodbyes_need_no_model():
    assert CLASSIFIER.classify(text("谢谢！")).reply == "不客气！"
    assert CLASSIFIER.classify(text("拜拜")).reply == "再见！"
    assert CLASSIFIER.classify(text("讲个笑话")).reply is None


def test_canned_replies_and_queries():
    assert CLASSIFIER.classify(text("/reset")).reply == "已重置"
    assert CLASSIFIER.classify(text("/help")).reply == "帮助"
    assert "/bogus" in (CLASSIFIER.classify(text("/bogus now")).reply or "")
    knowledge = CLASSIFIER.classify(text("  你们的退货政策是什么？ "))
    assert knowledge.reply is None and knowledge.query == "你们的退货政策是什么？"


def test_events():
    assert CLASSIFIER.classify(event("subscribe")).reply == "欢迎"
    assert CLASSIFIER.classify(event("subscribe_scan")).route is Route.EVENT
    assert CLASSIFIER.classify(event("unsubscribe")).route is Route.IGNORE
    clicked = CLASSIFIER.classify(event("CLICK", "MENU_RETURNS"))
    assert clicked.route is Route.KNOWLEDGE and clicked.query == "退货政策是什么？"
    assert CLASSIFIER.classify(event("click", "NOT_MAPPED")).reply == "帮助"


def test_non_text_messages_are_unsupported_but_answered():
    image = InboundMessage("default", "gh", "o-user", 1, "image", msg_id="2")
    assert CLASSIFIER.classify(image).reply == "仅支持文字"
    assert CLASSIFIER.classify(text("   ")).route is Route.UNSUPPORTED
    assert CLASSIFIER.classify(text("退货怎么办", msg_type="voice")).route is Route.KNOWLEDGE


def test_a_message_kind_wechat_does_not_send_gets_no_reply():
    forged = InboundMessage("default", "gh", "o-user", 1, "zzz_unknown", msg_id="3", content="退货政策是什么？")
    assert CLASSIFIER.classify(forged).route is Route.IGNORE
