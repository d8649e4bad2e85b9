"""Intent by labelled examples (lexical embedding here; the real embedder in integration)."""

from __future__ import annotations

import json

import pytest

from functions.common.records import InboundMessage, Route
from functions.intent.core import IntentClassifier, IntentTexts
from functions.intent.by_examples import Example, HybridEmbedding, KnnIntent, read_examples

EXAMPLES = [
    Example("转人工", "handoff"), Example("我要人工客服", "handoff"), Example("帮我转接人工", "handoff"),
    Example("垃圾公司", "abuse"), Example("你们全是骗子", "abuse"), Example("垃圾客服", "abuse"),
    Example("给我讲个笑话", "chitchat"), Example("你叫什么名字", "chitchat"), Example("你会唱歌吗", "chitchat"),
    Example("实木餐桌怎么保养", "knowledge"), Example("沙发坐垫塌陷怎么办", "knowledge"),
]
TEXTS = IntentTexts(welcome="w", help="h", greeting="g", reset="r", handoff="人工客服时间 9:00-21:00",
                    unsupported="u", abuse="请告诉我遇到了什么问题。")


@pytest.fixture(scope="module")
def knn() -> KnnIntent:
    return KnnIntent(EXAMPLES, HybridEmbedding(None), k=3)


def test_nearest_examples_vote(knn):
    prediction = knn.predict("垃圾客服公司")
    assert prediction.label == "abuse" and 0.6 < prediction.confidence < 1.0  # one neighbour shares 客服
    assert knn.predict("讲个笑话吧").label == "chitchat"


def test_nothing_near_is_no_prediction(knn):
    assert knn.predict("qwertyuiop") is None


def test_the_embedding_is_stable_across_processes():
    """Hashed n-grams use crc32, not hash(), which Python salts per process."""
    vector = HybridEmbedding(None).embed(["转人工"])[0]
    assert abs(float(vector @ vector) - 1.0) < 1e-6
    assert [int(i) for i in vector.nonzero()[0]][:3] == [int(i) for i in HybridEmbedding(None).embed(["转人工"])[0].nonzero()[0]][:3]


def classify(classifier: IntentClassifier, content: str):
    return classifier.classify(InboundMessage("default", "gh", "o-u", 1, "text", msg_id="1", content=content))


def test_confident_predictions_route_and_doubtful_ones_default_to_knowledge(knn):
    classifier = IntentClassifier(TEXTS, by_examples=knn, threshold=0.6)
    abuse = classify(classifier, "你们这个垃圾公司")
    assert abuse.route is Route.ABUSE and abuse.reply == "请告诉我遇到了什么问题。"
    assert classify(classifier, "帮我转接人工吧").route is Route.HANDOFF
    assert classify(classifier, "给我讲个笑话好吗").route is Route.CHITCHAT
    assert classify(classifier, "餐桌怎么保养").route is Route.KNOWLEDGE
    doubtful = classify(classifier, "沙发的客服")  # shares a little with several labels
    assert doubtful.route is Route.KNOWLEDGE and doubtful.reason == "default: knowledge question"


def test_examples_file_labels_are_checked(tmp_path):
    bad = tmp_path / "examples.jsonl"
    bad.write_text(json.dumps({"text": "hi", "route": "weather"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="route must be one of"):
        read_examples(bad)
    assert {example.label for example in read_examples()} == {"faq", "knowledge", "chitchat", "tool", "handoff", "abuse"}
