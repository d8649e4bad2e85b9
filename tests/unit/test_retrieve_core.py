from __future__ import annotations

import pytest

from functions.retrieve.core import FusionWeights, Retriever, cjk_share, fuse
from tests.fakes import ListSearch, passage


def test_keyword_scores_are_normalised_and_dense_added():
    keyword = [passage("a", 0, score=8.0), passage("b", 0, score=4.0)]
    dense = [passage("b", 0, score=0.9), passage("c", 0, score=0.5), passage("d", 0, score=-0.2)]
    fused = fuse(keyword, dense, keyword_weight=1.0, dense_weight=1.0)
    assert [(p.doc_id, p.score) for p in fused] == [("b", 1.4), ("a", 1.0), ("c", 0.5), ("d", 0.0)]


def test_chinese_queries_lean_on_keywords():
    weights = FusionWeights(keyword=1.0, dense=1.0, dense_for_chinese=0.2)
    assert weights.dense_weight("床垫可以试睡多久") == 0.2
    assert weights.dense_weight("how long is the mattress trial") == 1.0
    assert cjk_share("退货 policy") == pytest.approx(2 / 8)
    assert cjk_share("？？") == 0.0


def test_a_strong_keyword_match_beats_dense_noise_on_chinese():
    # Measured shape: MiniLM gives unrelated Chinese FAQ lines high cosine; BM25 knows better.
    keyword = [passage("trial", 0, score=8.9), passage("faq", 3, score=5.2)]
    dense = [passage("faq", 3, score=0.81), passage("faq", 1, score=0.61)]
    kept = Retriever(ListSearch(keyword, dense), top_k=1).retrieve("床垫可以试睡多久")
    assert kept[0].doc_id == "trial"


def test_top_k_and_one_document_cannot_crowd_out_the_rest():
    keyword = [passage("a", i, score=10 - i * 0.1) for i in range(3)] + [passage("b", 0, score=9.0), passage("c", 0, score=8.0)]
    search = ListSearch(keyword)
    kept = Retriever(search, top_k=3, max_per_document=2).retrieve("退货")
    assert [p.chunk_id for p in kept] == ["a:0", "a:1", "b:0"]
    assert search.limits == [12]


def test_weak_passages_are_dropped():
    keyword = [passage("a", 0, score=10.0), passage("b", 0, score=6.0), passage("c", 0, score=2.0)]
    kept = Retriever(ListSearch(keyword), top_k=3, min_relative_score=0.5).retrieve("退货")
    assert [p.doc_id for p in kept] == ["a", "b"]


def test_explicit_k_and_empty_results():
    search = ListSearch([passage("a", 0), passage("b", 0)])
    assert len(Retriever(search, top_k=3).retrieve("x", top_k=1)) == 1
    assert Retriever(ListSearch([]), top_k=3).retrieve("x") == []
