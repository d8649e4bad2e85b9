from __future__ import annotations

import pytest

from functions.common.text import cjk_share, question_language
from functions.retrieve.core import FusionWeights, Retriever, fuse
from tests.fakes import ListSearch, passage


def test_keyword_scores_are_scaled_by_the_best_and_dense_within_its_candidates():
    keyword = [passage("a", 0, score=8.0), passage("b", 0, score=4.0)]
    dense = [passage("b", 0, score=0.9), passage("c", 0, score=0.5), passage("d", 0, score=-0.2)]
    fused = fuse(keyword, dense, FusionWeights(keyword=1.0, dense=1.0))
    # keyword: a 1.0, b 0.5; dense from the floor (the last candidate here) to the top: b 1, c 0.64, d 0
    assert [(p.doc_id, p.score) for p in fused] == [("b", 1.5), ("a", 1.0), ("c", 0.636364), ("d", 0.0)]


def test_the_dense_floor_is_the_candidate_at_its_rank():
    dense = [passage(f"d{n}", 0, score=0.95 - n * 0.01) for n in range(12)]
    fused = fuse([], dense, FusionWeights(dense_floor_rank=4))
    scores = {p.doc_id: p.score for p in fused}
    assert scores["d0"] == 1.0 and scores["d4"] == 0.0 and scores["d11"] == 0.0  # below the floor counts as none
    assert scores["d2"] == pytest.approx(0.5)


def test_the_question_language_is_what_the_engine_must_write():
    assert question_language("床垫可以试睡多久") == "zh"
    assert question_language("how long is the mattress trial") == "en"
    assert question_language("iPhone 15 能用吗") == "zh"  # 3 of 10 word characters are Chinese
    assert cjk_share("退货 policy") == pytest.approx(2 / 8)
    assert cjk_share("？？") == 0.0


def test_a_strong_keyword_match_beats_a_near_miss_in_the_dense_band():
    # Measured shape: multilingual-e5 puts every passage of a FAQ between 0.80 and 0.87; a
    # near miss can edge the right one on cosine while BM25 clearly prefers the right one.
    keyword = [passage("trial", 0, score=8.9), passage("faq", 3, score=5.2)]
    dense = [passage("faq", 3, score=0.86), passage("trial", 0, score=0.855), passage("x", 0, score=0.80),
             passage("y", 0, score=0.80)]
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
