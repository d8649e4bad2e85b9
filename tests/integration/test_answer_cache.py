"""The semantic answer cache on real Milvus Lite with the real default embedder: hits for the same
question, misses for others, and no answer outliving the document it cites."""

from __future__ import annotations

import pytest

from functions.kb.answer_cache import AnswerCache, cacheable
from functions.common.clock import FixedClock
from functions.kb.embedding import Embedder, build_embedder
from functions.kb.store import KnowledgeBase
from functions.common.settings import Settings
from knowledge.chunking import chunk_document
from knowledge.ingest import ingest
from knowledge.loaders import Document

QUESTION = "定制家具的生产周期是多久？"
ANSWER = "定制家具确认方案并支付定金后，生产周期为25–35天。"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return build_embedder(Settings())


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "custom.md").write_text("# 定制家具\n\n定制方案确认并支付定金后，生产周期为 25–35 天。\n", encoding="utf-8")
    (folder / "sofa.md").write_text("# 沙发保养\n\n布艺沙发每周用吸尘器清洁一次。\n", encoding="utf-8")
    return folder


@pytest.fixture
def kb(tmp_path, embedder, corpus):
    with KnowledgeBase(str(tmp_path / "kb.db"), "cache_kb", embedder) as knowledge_base:
        ingest(knowledge_base, [corpus])
        yield knowledge_base


def custom_doc_id(kb) -> str:
    (passage,) = [p for p in kb.keyword_search("定制家具 生产周期", 3) if p.source == "custom.md"][:1]
    return passage.doc_id


@pytest.fixture
def cache(kb):
    cache = AnswerCache(kb, FixedClock(1_000_000), ttl_s=3600)
    assert cache.store("default", QUESTION, ANSWER, ("定制家具",), [custom_doc_id(kb)])
    return cache


def test_the_same_question_hits_and_other_questions_miss(cache):
    hit = cache.lookup("default", "定制家具的生产周期是多久")
    assert hit is not None and hit.answer == ANSWER and hit.sources == ("定制家具",)
    assert cache.lookup("default", "定制家具生产周期要多久？") is not None  # phrased a little differently
    assert cache.lookup("default", "沙发怎么清洁？") is None
    assert cache.lookup("default", "定制家具可以退吗？") is None  # same topic, another question
    assert cache.lookup("other-account", QUESTION) is None  # accounts never share answers


def test_re_ingesting_a_cited_document_with_new_content_drops_the_entry(cache, kb, corpus):
    assert cache.size() == 1
    (corpus / "custom.md").write_text("# 定制家具\n\n定制家具生产周期调整为 20–30 天。\n", encoding="utf-8")
    report = ingest(kb, [corpus])
    assert report.updated == ["custom.md"] and report.unchanged == ["sofa.md"]
    assert cache.size() == 0 and cache.lookup("default", QUESTION) is None


def test_re_ingesting_unchanged_documents_keeps_the_entry(cache, kb, corpus):
    ingest(kb, [corpus])
    assert cache.lookup("default", QUESTION) is not None


def test_a_source_changed_behind_the_caches_back_is_caught_on_lookup(cache, kb):
    """Another process replaced the document without telling the cache: the hit checks."""
    chunks = chunk_document(Document("custom.md", "定制家具", "# 定制家具\n\n生产周期另行通知。"))
    assert chunks[0].doc_id == custom_doc_id(kb)
    kb.replace_document(chunks[0].doc_id, chunks)
    assert cache.lookup("default", QUESTION) is None and cache.size() == 0


def test_entries_expire(kb):
    clock = FixedClock(1_000_000)
    cache = AnswerCache(kb, clock, ttl_s=60)
    cache.store("default", QUESTION, ANSWER, ("定制家具",), [custom_doc_id(kb)])
    clock.advance(61)
    assert cache.lookup("default", QUESTION) is None


def test_personal_answers_are_not_cacheable():
    passages = ["客服热线400-820-6688，每天9:00-21:00。"]
    assert cacheable("客服电话是多少", "客服热线400-820-6688。", passages)
    assert not cacheable("我的订单号是QH20261121001，到哪了", "您的订单正在配送。", passages)
    assert not cacheable("会员号CANARY0007X能打折吗", "可以。", passages)
    assert not cacheable("怎么联系你们", "请发邮件到 alice@example.com。", passages)  # not from the passages
    assert not cacheable("运费多少", "订单 88812345 免运费。", passages)



def test_people_naming_themselves_are_not_cached():
    passages = ["无理由退货时，小件商品由您承担寄回运费。"]
    assert not cacheable("我是李雷，请问你们的退货运费由谁承担呢？", "李雷您好，小件商品由您承担。", passages)
    assert not cacheable("我的手机 138 1234 5678，退货运费谁出？", "小件商品由您承担。", passages)
    assert not cacheable("退货运费谁出？", "已记下您的号码 138-1234-5678。", passages)
