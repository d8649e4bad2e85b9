"""Rule-based intent: commands, events, greetings, human handoff, then knowledge vs chit-chat.

Rules run first because they are free and exact; everything that is not small talk goes to
the knowledge route, since an answer grounded in the knowledge base is the safe default.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from functions.common.records import InboundMessage, Intent, Route
from functions.intent.by_examples import KnnIntent, LinearIntent
from functions.intent.tools import ToolBox

GREETINGS = frozenset(
    {"你好", "您好", "hi", "hello", "hey", "在吗", "在么", "在不在", "早上好", "下午好", "晚上好", "哈喽", "嗨", "你好呀", "您好呀"}
)
HANDOFF_WORDS = ("转人工", "人工客服", "人工服务", "真人客服", "找人工", "要人工", "human agent", "real person")
HANDOFF_EXACT = frozenset({"人工", "客服", "human"})
THANKS = re.compile(r"^(谢谢|谢谢你|谢谢您|多谢|感谢|好的谢谢|thanks|thank you|thx)$")
GOODBYES = re.compile(r"^(再见|拜拜|bye|goodbye|晚安)$")
CHITCHAT_PATTERNS = re.compile(r"^(好的|好吧|ok|okay|嗯+|哦+|哈+|呵+|讲个笑话|笑话|无聊|早安|[!！?？。.~～]+)$")
# Who or what the assistant is: answered with the configured self-introduction.
IDENTITY = re.compile(
    r"^(你|您)(是|叫)(谁|什么|哪位|啥)|^(你|您)(是|叫)什么名字|^(你|您)是(机器人|真人|人工|ai)|^(你|您)(能|会|可以)(做|干|帮我做)?(什么|啥|哪些)"
    r"|^(你们|你家|贵)(是)?(什么|哪家|哪个|啥)公司|^(你们|你家)(是)?(干|做)(什么|啥)的|^who are you|^what (can|do) you do"
    r"|^what are you|^are you (a )?(bot|robot|human)"
)
# A message the examples call abuse is answered as abuse only when the classifier is this
# sure: taking a customer's question for an insult costs more than the reverse.
ABUSE_CONFIDENCE = 0.8
IGNORED_EVENTS = frozenset({"view", "location", "templatesendjobfinish", "masssendjobfinish"})
SUBSCRIBE_EVENTS = frozenset({"subscribe", "subscribe_scan", "subscribe_scan_product", "enter_agent"})
TEXT_TYPES = frozenset({"text", "voice"})
# Kinds a user sends that "text only, please" answers; any other gets no reply at all.
MEDIA_TYPES = frozenset({"image", "video", "shortvideo", "location", "link", "file", "miniprogrampage"})
TRAILING_PUNCTUATION = "!！?？。.~～,，、 "


@dataclass(frozen=True)
class IntentTexts:
    """The canned answers rules give; configured per deployment."""

    welcome: str
    help: str
    greeting: str
    reset: str
    handoff: str
    unsupported: str
    thanks: str = "不客气！"
    goodbye: str = "再见！"
    abuse: str = "请告诉我遇到了什么问题。"
    identity: str = "您好，我是智能客服助手，可以根据我们的资料回答您的问题。需要人工服务时请发送“人工”。"
    menu: dict[str, str] = field(default_factory=dict)  # CLICK EventKey -> question it asks


def normalise(text: str) -> str:
    """NFKC folds full-width forms; lower-case and trimmed punctuation make rules robust."""
    return unicodedata.normalize("NFKC", text).strip().lower()


class IntentClassifier:
    def __init__(
        self,
        texts: IntentTexts,
        tools: ToolBox | None = None,
        by_examples: LinearIntent | KnnIntent | None = None,
        threshold: float = 0.6,
        embed_query: Callable[[str], np.ndarray] | None = None,
    ):
        """``embed_query``: the service's embedder for questions; the vector it gives goes with
        a knowledge intent, so retrieval does not embed the same text again."""
        self._texts = texts
        self._tools = tools or ToolBox(())
        self._by_examples = by_examples
        self._threshold = threshold
        self._embed_query = embed_query

    def classify(self, message: InboundMessage) -> Intent:
        if message.msg_type == "event":
            return self._event(message)
        if message.msg_type not in TEXT_TYPES | MEDIA_TYPES:  # a kind WeChat added later, or a forged one
            return Intent(Route.IGNORE, 1.0, f"unknown msg_type {message.msg_type[:32]}")
        if message.msg_type not in TEXT_TYPES or not (message.content or "").strip():
            return Intent(Route.UNSUPPORTED, 1.0, f"msg_type {message.msg_type}", reply=self._texts.unsupported)
        return self._text(message.content or "")

    def _event(self, message: InboundMessage) -> Intent:
        event = (message.event or "").lower()
        if event in SUBSCRIBE_EVENTS:
            return Intent(Route.EVENT, 1.0, f"event {event}", reply=self._texts.welcome)
        if event == "unsubscribe":  # nothing to say, and nothing of theirs to keep
            return Intent(Route.IGNORE, 1.0, "event unsubscribe", forget_user=True)
        if event == "click":
            question = self._texts.menu.get(message.event_key or "")
            if question:
                return Intent(Route.KNOWLEDGE, 1.0, "menu click", query=question)
            return Intent(Route.EVENT, 1.0, "unmapped menu click", reply=self._texts.help)
        return Intent(Route.IGNORE, 1.0, f"event {event or 'unknown'}")

    def _text(self, content: str) -> Intent:
        text = normalise(content)
        if text.startswith("/"):
            return self._command(text)
        bare = text.strip(TRAILING_PUNCTUATION)
        if bare in GREETINGS:
            return Intent(Route.GREETING, 1.0, "greeting", reply=self._texts.greeting)
        if bare in HANDOFF_EXACT or any(word in text for word in HANDOFF_WORDS):
            return Intent(Route.HANDOFF, 0.9, "handoff words", reply=self._texts.handoff)
        # Thanks and goodbyes are answered by rule: no GPU time for a "不客气".
        if THANKS.match(bare):
            return Intent(Route.CHITCHAT, 1.0, "thanks", reply=self._texts.thanks)
        if GOODBYES.match(bare):
            return Intent(Route.CHITCHAT, 1.0, "goodbye", reply=self._texts.goodbye)
        if IDENTITY.match(bare):
            return Intent(Route.CHITCHAT, 1.0, "who am I", reply=self._texts.identity)
        if CHITCHAT_PATTERNS.match(bare or text):
            return Intent(Route.CHITCHAT, 0.8, "small talk", query=content.strip())
        tool = self._tools.answer(content)
        if tool is not None:
            return Intent(Route.TOOL, 1.0, f"tool {tool.tool}: {tool.intent}", query=content.strip(), reply=tool.text)
        return self._from_examples(content.strip())

    def _from_examples(self, content: str) -> Intent:
        """The labelled examples decide when the classifier is sure enough; otherwise, and for
        knowledge and tool-like questions no tool took, the knowledge route."""
        vector = self._embed_query(content) if self._embed_query is not None else None
        carried = vector.astype(np.float32).tobytes() if vector is not None else b""
        prediction = self._by_examples.predict(content, vector) if self._by_examples is not None else None
        if prediction is None or prediction.confidence < self._threshold or \
                (prediction.label == "abuse" and prediction.confidence < ABUSE_CONFIDENCE):
            return Intent(Route.KNOWLEDGE, 0.6, "default: knowledge question", query=content, query_vector=carried)
        reason = f"examples: {prediction.label}"
        if prediction.label == "chitchat":
            return Intent(Route.CHITCHAT, prediction.confidence, reason, query=content)
        if prediction.label == "handoff":
            return Intent(Route.HANDOFF, prediction.confidence, reason, reply=self._texts.handoff)
        if prediction.label == "abuse":
            return Intent(Route.ABUSE, prediction.confidence, reason, reply=self._texts.abuse)
        return Intent(Route.KNOWLEDGE, prediction.confidence, reason, query=content, query_vector=carried)

    def _command(self, text: str) -> Intent:
        command = text.split()[0]
        if command == "/reset":
            return Intent(Route.COMMAND, 1.0, "command /reset", reply=self._texts.reset, forget_user=True)
        if command == "/help":
            return Intent(Route.COMMAND, 1.0, "command /help", reply=self._texts.help)
        return Intent(Route.COMMAND, 1.0, "unknown command", reply=f"未知命令 {command[:32]}。\n{self._texts.help}")
