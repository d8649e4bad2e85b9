from __future__ import annotations

import pytest

from functions.common.errors import KnowledgeBaseError
from knowledge import SAMPLE_CORPUS_DIR
from knowledge.chunking import chunk_document, document_id
from knowledge.ingest import discover
from knowledge.loaders import Document, html_to_text, load_document


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_markdown_title_and_sections(tmp_path):
    path = write(tmp_path, "a.md", "# 退货政策\n\n导语。\n\n## 条件\n\n完好。\n\n## 运费\n\n买家承担。\n")
    document = load_document(path, "a.md")
    assert document.title == "退货政策"
    chunks = chunk_document(document, max_chars=500)
    assert len(chunks) == 1 and "## 条件" in chunks[0].text and "## 运费" in chunks[0].text
    small = chunk_document(document, max_chars=12)
    assert [chunk.chunk_id for chunk in small] == [f"{document_id('a.md')}:{i}" for i in range(len(small))]
    assert all(len(chunk.text) <= 12 for chunk in small)


def test_html_text_and_title(tmp_path):
    title, text = html_to_text("<html><head><title>破损</title><style>p{}</style></head><body><h1>签收</h1><p>拍照</p><ul><li>一</li></ul><script>x()</script></body></html>")
    assert title == "破损" and text == "签收\n拍照\n- 一"


def test_faq_files_give_one_chunk_per_pair(tmp_path):
    jsonl = write(tmp_path, "faq.jsonl", '{"question": "能退吗？", "answer": "七天内可以。"}\n\n{"question": "运费？", "answer": "10元。"}\n')
    csv_file = write(tmp_path, "faq.csv", 'question,answer\n"会员?","注册即可,免费。"\n')
    chunks = chunk_document(load_document(jsonl, "faq.jsonl"))
    assert [chunk.title for chunk in chunks] == ["能退吗？", "运费？"]
    assert chunks[0].text == "问：能退吗？\n答：七天内可以。"
    assert chunk_document(load_document(csv_file, "faq.csv"))[0].text == "问：会员?\n答：注册即可,免费。"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"question": "x"}\n', "non-empty"),
        ("bad2.jsonl", "not json\n", "JSON"),
        ("bad.csv", "q,a\nx,y\n", "header"),
        ("bad.pdf", "%PDF", "unsupported"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, name, text, message):
    with pytest.raises(KnowledgeBaseError, match=message):
        load_document(write(tmp_path, name, text), name)


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes("退货".encode("gbk"))
    with pytest.raises(KnowledgeBaseError, match="UTF-8"):
        load_document(path, "gbk.txt")


def test_ids_are_stable_and_hashes_follow_content():
    first = chunk_document(Document("a.md", "T", text="一。\n\n二。"))
    again = chunk_document(Document("a.md", "T", text="一。\n\n二。"))
    changed = chunk_document(Document("a.md", "T", text="一。\n\n三。"))
    assert first == again
    assert changed[0].doc_id == first[0].doc_id and changed[0].doc_hash != first[0].doc_hash


def test_sample_corpus_is_large_and_loads():
    files = list(discover([SAMPLE_CORPUS_DIR]))
    assert len(files) >= 30
    sources = {source for _, source in files}
    assert {"returns-policy.md", "faq.jsonl", "faq-membership.csv", "damaged-on-arrival.html", "about-qinghe.txt"} <= sources
    for path, source in files:
        assert chunk_document(load_document(path, source)), source


def test_a_long_faq_answer_is_split_under_its_question(tmp_path):
    long_answer = "这是一句很长的回答。" * 120  # 1200 characters
    path = write(tmp_path, "faq.jsonl", '{"question": "长问题？", "answer": "%s"}\n' % long_answer)
    chunks = chunk_document(load_document(path, "faq.jsonl"), max_chars=500)
    assert len(chunks) == 3 and all(chunk.title == "长问题？" for chunk in chunks)
    assert [chunk.text.split("\n", 1)[0] for chunk in chunks] == ["问：长问题？（1/3）", "问：长问题？（2/3）", "问：长问题？（3/3）"]
    assert "".join(chunk.text.split("答：", 1)[1] for chunk in chunks) == long_answer


def test_values_are_clipped_by_utf8_bytes_for_milvus_servers():
    from functions.kb.store import clip_utf8

    assert clip_utf8("退货政策", 7) == "退货"  # never half a character
    assert clip_utf8("abc", 10) == "abc"
