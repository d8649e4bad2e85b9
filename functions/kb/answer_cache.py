"""The semantic answer cache: a generated answer to a knowledge question, served again to a
question that asks the same thing, without touching the GPU.

Entries live in a collection beside the knowledge base (``<collection>_answers``), so every
retrieve replica of a Milvus server shares them. A question hits an entry of its account when
both the MiniLM cosine and ``faq_similarity`` (content bigrams and words) clear their
thresholds: near-duplicates only, since MiniLM alone rates unrelated Chinese questions
alike.

An entry remembers the content hash of every document its answer cites. It is dropped when
one of them is re-ingested with new content or deleted (``invalidate_documents``, called by
ingest), and checked again on every hit, so an answer never outlives its sources, whichever
process changed them.

Only answers nobody could have personalised are stored: no conversation history in their
prompt, no one saying who they are ("我是…", "我的手机…") and no personal-looking token (long
numbers, also when grouped, order ids, e-mail addresses) in the question, and none in the
answer that the cited passages do not contain. This is a filter on patterns, not a proof:
accounts whose users share personal details in questions can turn the cache off.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from functions.common.clock import Clock
from functions.kb.store import KnowledgeBase, clip_utf8
from functions.common.text import faq_similarity

COLLECTION_SUFFIX = "_answers"
MAX_QUESTION_BYTES = 1024
MAX_ANSWER_BYTES = 8192
MAX_SOURCES = 8
# Long digit runs (once the spaces and dashes between digits are gone: "138 1234 5678"),
# letter-digit codes (order numbers, canaries), e-mail addresses.
_PERSONAL = re.compile(r"\d{5,}|[A-Za-z]+\d[A-Za-z\d]*|\d+[A-Za-z][A-Za-z\d]*|[\w.+-]+@[\w-]+\.[\w.]+")
_DIGIT_SEPARATORS = re.compile(r"(?<=\d)[\s\-－—.·]+(?=\d)")
# Someone saying who they are or what is theirs: the answer may address them by it.
_SELF = re.compile(r"我(是|叫|姓)|我的(名字|手机|电话|号码|地址|订单|单号|会员|账号|身份证|微信|邮箱)|本人|手机号|电话号码|住在")


@dataclass(frozen=True)
class CachedAnswer:
    question: str  # the question it was generated for
    answer: str
    sources: tuple[str, ...]
    similarity: float


def cacheable(question: str, answer: str, passage_texts: Sequence[str]) -> bool:
    """True when nothing in the answer can be about the person who asked."""
    if _SELF.search(question) or _PERSONAL.search(_DIGIT_SEPARATORS.sub("", question)):
        return False
    known = _DIGIT_SEPARATORS.sub("", "\n".join(passage_texts))
    return all(token in known for token in _PERSONAL.findall(_DIGIT_SEPARATORS.sub("", answer)))


class AnswerCache:
    def __init__(
        self,
        kb: KnowledgeBase,
        clock: Clock,
        *,
        dense_threshold: float = 0.9,
        lexical_threshold: float = 0.8,
        ttl_s: float = 7 * 86400,
        candidates: int = 8,
    ):
        self._kb = kb
        self._client = kb.client
        self._collection = kb.collection + COLLECTION_SUFFIX
        self._clock = clock
        self._dense_threshold = dense_threshold
        self._lexical_threshold = lexical_threshold
        self._ttl_s = ttl_s
        self._candidates = candidates
        self._ready = False

    def lookup(self, account: str, question: str) -> CachedAnswer | None:
        if not question.strip() or not self._exists():
            return None
        vector = self._kb.embed_query(question).tolist()
        hits = self._client.search(
            self._collection, data=[vector], anns_field="dense", limit=self._candidates,
            filter=f"account == {json.dumps(account)}", search_params={"metric_type": "COSINE"},
            output_fields=["question", "answer", "sources", "doc_ids", "doc_hashes", "created_s"],
        )[0]
        for hit in hits:
            entity = hit["entity"]
            if float(hit["distance"]) < self._dense_threshold:
                break  # best-first: the rest are further still
            similarity = faq_similarity(question, entity["question"])
            if similarity < self._lexical_threshold:
                continue
            if not self._still_valid(entity):
                self._client.delete(self._collection, ids=[hit["id"]])
                continue
            return CachedAnswer(entity["question"], entity["answer"], tuple(json.loads(entity["sources"])), round(similarity, 4))
        return None

    def store(self, account: str, question: str, answer: str, sources: Sequence[str], doc_ids: Sequence[str]) -> bool:
        """Cache a grounded answer (the caller checked ``cacheable``); False if its sources are gone."""
        cited = list(dict.fromkeys(doc_ids))[:MAX_SOURCES]
        hashes = self._kb.hashes_of(cited)
        if not cited or len(hashes) != len(cited):
            return False
        self._ensure_collection()
        entry_id = hashlib.sha256(f"{account}\0{question.strip()}".encode()).hexdigest()[:32]
        row: dict[str, Any] = {
            "id": entry_id,
            "account": account,
            "question": clip_utf8(question.strip(), MAX_QUESTION_BYTES),
            "answer": clip_utf8(answer, MAX_ANSWER_BYTES),
            "sources": clip_utf8(json.dumps(list(sources)[:MAX_SOURCES], ensure_ascii=False), 2048),
            "doc_ids": cited,
            "doc_hashes": json.dumps(hashes),
            "created_s": self._clock.now_s(),
            "dense": self._kb.embed_query(question).tolist(),  # question against question: both queries
        }
        self._client.upsert(self._collection, [row])
        return True

    def invalidate_documents(self, doc_ids: Sequence[str]) -> None:
        """Drop every entry citing one of these documents (re-ingested or deleted)."""
        wanted = list(dict.fromkeys(doc_ids))
        if wanted and self._exists():
            self._client.delete(self._collection, filter=f"array_contains_any(doc_ids, {json.dumps(wanted)})")

    def size(self) -> int:
        if not self._exists():
            return 0
        return len(self._client.query(self._collection, filter='id != ""', output_fields=["id"], limit=1_000_000))

    def _still_valid(self, entity: dict[str, Any]) -> bool:
        if self._clock.now_s() - float(entity["created_s"]) > self._ttl_s:
            return False
        return self._kb.hashes_of(list(entity["doc_ids"])) == json.loads(entity["doc_hashes"])

    def _exists(self) -> bool:
        if not self._ready:
            self._ready = bool(self._client.has_collection(self._collection))
            if self._ready:
                self._client.load_collection(self._collection)
        return self._ready

    def _ensure_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        if self._exists():
            return
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("account", DataType.VARCHAR, max_length=128)
        schema.add_field("question", DataType.VARCHAR, max_length=MAX_QUESTION_BYTES)
        schema.add_field("answer", DataType.VARCHAR, max_length=MAX_ANSWER_BYTES)
        schema.add_field("sources", DataType.VARCHAR, max_length=2048)
        schema.add_field("doc_ids", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_SOURCES, max_length=64)
        schema.add_field("doc_hashes", DataType.VARCHAR, max_length=4096)
        schema.add_field("created_s", DataType.DOUBLE)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self._kb.embedder.dim)
        index = self._client.prepare_index_params()
        index.add_index("dense", index_type="FLAT", metric_type="COSINE")
        self._client.create_collection(self._collection, schema=schema, index_params=index)
        self._ready = True
