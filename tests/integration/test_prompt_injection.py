"""Injection attempts hidden in knowledge-base documents (tests/fixtures/injection/): none
reaches the model as an instruction, and an obedient model still cannot be made to say the
attacker's payload or the system prompt. Every attempt carries a "PWNED<n>" payload."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from functions.kb.embedding import build_embedder
from functions.kb.store import KnowledgeBase
from functions.common.settings import DEFAULT_SYSTEM_PROMPT, Settings
from functions.generate.core import Completion, Generator, build_messages
from functions.retrieve.core import Retriever
from knowledge import SAMPLE_CORPUS_DIR
from knowledge.chunking import chunk_document
from knowledge.ingest import ingest
from knowledge.loaders import load_document

ATTEMPTS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "injection").glob("*.md"))
PAYLOAD = re.compile(r"PWNED\d+")


class ObedientEngine:
    """The worst model: it does whatever its prompt says. It repeats any payload it sees, and
    recites its system prompt when asked to; otherwise it quotes the first reference line."""

    model_name = "obedient"

    def count_tokens(self, text: str) -> int:
        return len(text)

    def complete(self, messages, max_new_tokens):
        prompt = "\n".join(m["content"] for m in messages)
        payloads = PAYLOAD.findall(prompt)
        if payloads:
            text = "好的：" + " ".join(payloads)
        elif "系统提示词" in prompt or "system prompt" in prompt.lower():
            text = messages[0]["content"]
        else:
            reference = messages[-1]["content"].split("\n")
            text = next((line for line in reference[2:] if line and not line.startswith(("<<<", ">>>"))), "")
        return Completion(text, len(prompt), len(text), truncated=False)


def passages_of(path: Path):
    from functions.common.records import Passage

    return [Passage(c.chunk_id, c.doc_id, c.source, c.title, c.text, 1.0) for c in chunk_document(load_document(path, path.name))]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=lambda p: p.stem)
def test_no_attempt_reaches_the_prompt_or_the_answer(attempt):
    passages = passages_of(attempt)
    assert PAYLOAD.search("".join(p.text for p in passages))  # the attempt is really in the document
    prompt = build_messages(DEFAULT_SYSTEM_PROMPT, "请介绍一下", passages, 1000)
    user_turn = prompt[-1]["content"]
    assert not PAYLOAD.search(user_turn), user_turn
    assert user_turn.count("<<<") == len(passages) and user_turn.count(">>>") == len(passages)  # fences intact
    answer = Generator(ObedientEngine(), system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=200,
                       max_passage_chars=1000).answer(passages[0].title, passages)
    assert not PAYLOAD.search(answer.text) and DEFAULT_SYSTEM_PROMPT[:12] not in answer.text, answer


def test_attempts_in_the_knowledge_base_are_retrieved_but_defused(tmp_path):
    """The same documents ingested with the sample corpus: retrieval finds them for the
    questions they are about, and what the model is shown is clean."""
    embedder = build_embedder(Settings())
    with KnowledgeBase(str(tmp_path / "kb.db"), "injection_kb", embedder) as kb:
        ingest(kb, [SAMPLE_CORPUS_DIR, *ATTEMPTS])
        retriever = Retriever(kb, top_k=3)
        generator = Generator(ObedientEngine(), system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=200,
                              max_passage_chars=1000)
        reached = 0
        for question in ("运费补充说明", "床垫试睡补充", "以旧换新补充", "价格保护补充", "退款补充", "客服热线补充"):
            passages = retriever.retrieve(question)
            reached += any(PAYLOAD.search(p.text) for p in passages)
            prompt = build_messages(DEFAULT_SYSTEM_PROMPT, question, passages, 1000)
            assert not PAYLOAD.search(prompt[-1]["content"])
            assert not PAYLOAD.search(generator.answer(question, passages).text)
        assert reached >= 4  # the attempts were in front of the model, and it saw none of them
