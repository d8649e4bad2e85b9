"""The knowledge base: one Milvus collection holding each chunk's text, a dense embedding
(the configured embedder: functions/kb/embedding.py) and a BM25 sparse vector Milvus
computes from the text with the jieba analyzer. It answers the two searches separately and
``functions.retrieve.core`` fuses them (Milvus Lite's own ``hybrid_search`` ranks its negated
BM25 scores backwards).

The collection records which embedder built it (its name and dimension, as collection
properties): vectors of two models are not comparable, so a knowledge base refuses to be
searched or extended with another embedder and says how to rebuild it. It also records
whether it holds the bundled sample corpus, so an operator's first ingest replaces the
sample instead of mixing another company's documents with theirs.

Milvus Lite (a local directory, the embedded default) admits one process at a time; the
retrieve deployment holds it while serving. A Milvus server (``http://…``) has no such limit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from functions.kb.embedding import Embedder
from functions.common.errors import KnowledgeBaseBusy, KnowledgeBaseError, KnowledgeBaseMismatch
from functions.common.records import Passage

# Collection properties: what built the collection, and whether it is the bundled sample.
EMBEDDER_PROPERTY = "wxassist.embedder"
DIM_PROPERTY = "wxassist.dim"
SAMPLE_PROPERTY = "wxassist.sample"
LEGACY_EMBEDDER = "all-MiniLM-L6-v2"  # what every collection made before the property existed
# VARCHAR limits: a Milvus server counts bytes (Milvus Lite counts characters), so values
# are clipped by UTF-8 bytes to fit either.
MAX_TEXT_BYTES = 8192
MAX_TITLE_BYTES = 512
MAX_SOURCE_BYTES = 1024
_PASSAGE_FIELDS = ["doc_id", "source", "title", "text"]
_LITE_MAX_ROWS = 10_000_000
_DOC_ID = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: str
    doc_id: str
    doc_hash: str  # content hash of the whole document: re-ingest skips unchanged ones
    source: str
    title: str
    text: str


class KnowledgeBase:
    def __init__(self, uri: str, collection: str, embedder: Embedder):
        self._uri = uri
        self._collection = collection
        self._embedder = embedder
        self._is_local = "://" not in uri
        self._client = _connect(uri)
        # Known once true (collections are dropped only by ``rebuild``), so searches skip the check.
        self._collection_exists = bool(self._client.has_collection(collection))
        self._properties: dict[str, str] = {}
        if self._collection_exists:  # a reopened collection starts released
            self._client.load_collection(collection)
            self._properties = self._read_properties()

    def close(self) -> None:
        self._client.close()
        if self._is_local:
            # pymilvus runs Milvus Lite as an in-process server that outlives the client and
            # keeps the directory's lock; stop it so another process can open the KB.
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self._uri)

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- schema ------------------------------------------------------------------------

    def ensure_collection(self) -> None:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        if self.has_collection():
            return
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=96)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
        schema.add_field("doc_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
        schema.add_field("title", DataType.VARCHAR, max_length=MAX_TITLE_BYTES)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=MAX_TEXT_BYTES,
            enable_analyzer=True,
            analyzer_params={"tokenizer": "jieba"},
        )
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self._embedder.dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index = self._client.prepare_index_params()
        index.add_index("dense", index_type="FLAT", metric_type="COSINE")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self._client.create_collection(self._collection, schema=schema, index_params=index)
        self._collection_exists = True
        self._set_properties({EMBEDDER_PROPERTY: self._embedder.name, DIM_PROPERTY: str(self._embedder.dim),
                              SAMPLE_PROPERTY: "false"})

    def built_with(self) -> tuple[str, int] | None:
        """The embedder (name, dimension) that built the collection; None while there is none."""
        if not self.has_collection():
            return None
        dim = self._properties.get(DIM_PROPERTY)
        return self._properties.get(EMBEDDER_PROPERTY, LEGACY_EMBEDDER), int(dim) if dim else 384

    def check_embedder(self) -> None:
        """Refuse an embedder other than the one that built the collection: its vectors would
        be compared with another model's, and every search would quietly go wrong."""
        built = self.built_with()
        if built is None or built == (self._embedder.name, self._embedder.dim):
            return
        name, dim = built
        raise KnowledgeBaseMismatch(
            f"the knowledge base {self._uri} was built with the embedder {name} ({dim} dimensions), but this "
            f"service embeds with {self._embedder.name} ({self._embedder.dim} dimensions). Rebuild it with the "
            f"new embedder: `wxassist kb ingest --rebuild YOUR_DOCUMENTS…`, or set WXA_EMBEDDER back to what built it.")

    def rebuild(self) -> None:
        """Drop the collection and everything beside it (the answer cache): the next ingest
        builds it afresh with this embedder."""
        for name in (self._collection, self._collection + "_answers"):
            if self._client.has_collection(name):
                self._client.drop_collection(name)
        self._collection_exists = False
        self._properties = {}

    @property
    def holds_sample(self) -> bool:
        return self._properties.get(SAMPLE_PROPERTY) == "true"

    def mark_sample(self, sample: bool) -> None:
        self._set_properties({SAMPLE_PROPERTY: "true" if sample else "false"})

    def _read_properties(self) -> dict[str, str]:
        described = self._client.describe_collection(self._collection)
        return {str(key): str(value) for key, value in (described.get("properties") or {}).items()}

    def _set_properties(self, properties: dict[str, str]) -> None:
        self._client.alter_collection_properties(self._collection, properties=properties)
        self._properties.update(properties)

    def has_collection(self) -> bool:
        if not self._collection_exists:
            self._collection_exists = bool(self._client.has_collection(self._collection))
        return self._collection_exists

    # ---- writes ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The Milvus client, for collections that live beside the KB (the answer cache)."""
        return self._client

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def hashes_of(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """doc_id -> doc_hash for the given documents that are stored (absent: deleted)."""
        wanted = [doc_id for doc_id in dict.fromkeys(doc_ids) if _DOC_ID.match(doc_id)]
        if not wanted or not self.has_collection():
            return {}
        rows = self._client.query(
            self._collection, filter=f"doc_id in {json.dumps(wanted)}", output_fields=["doc_id", "doc_hash"],
            limit=_LITE_MAX_ROWS,
        )
        return {row["doc_id"]: row["doc_hash"] for row in rows}

    def document_hashes(self) -> dict[str, str]:
        """doc_id -> doc_hash for every document stored."""
        rows = self._all_rows(["doc_id", "doc_hash"])
        return {row["doc_id"]: row["doc_hash"] for row in rows}

    def replace_document(self, doc_id: str, chunks: Sequence[Chunk]) -> None:
        """Delete every chunk of the document, then insert the new ones."""
        self.check_embedder()
        self.delete_document(doc_id)
        if not chunks:
            return
        texts = [_indexed_text(chunk) for chunk in chunks]
        vectors = self._embedder.embed_passages(texts).tolist()
        rows = [
            {
                "chunk_id": chunk.chunk_id,
                "doc_id": chunk.doc_id,
                "doc_hash": chunk.doc_hash,
                "source": clip_utf8(chunk.source, MAX_SOURCE_BYTES),
                "title": clip_utf8(chunk.title, MAX_TITLE_BYTES),
                "text": clip_utf8(text, MAX_TEXT_BYTES),
                "dense": vector,
            }
            for chunk, text, vector in zip(chunks, texts, vectors, strict=True)
        ]
        self._client.insert(self._collection, rows)

    def delete_document(self, doc_id: str) -> None:
        if not _DOC_ID.match(doc_id):
            raise KnowledgeBaseError(f"malformed document id {doc_id!r}")
        self._client.delete(self._collection, filter=f'doc_id == "{doc_id}"')

    # ---- reads -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        rows = self._all_rows(["doc_id"])
        built = self.built_with()
        return {"documents": len({row["doc_id"] for row in rows}), "chunks": len(rows),
                "embedder": built[0] if built else None, "dim": built[1] if built else None,
                "sample": self.holds_sample}

    def embed_query(self, query: str) -> np.ndarray:
        return self._embedder.embed_queries([query])[0]

    def dense_search(self, query: str, limit: int, vector: np.ndarray | None = None) -> list[Passage]:
        """Best-first by cosine similarity of the embedder's vectors; ``vector``: the query's,
        when the caller has it already (the intent step embedded the question)."""
        if not query.strip() or not self.has_collection():
            return []
        self.check_embedder()
        if vector is None:
            vector = self.embed_query(query)
        hits = self._client.search(
            self._collection, data=[np.asarray(vector, dtype=np.float32).tolist()], anns_field="dense", limit=limit,
            output_fields=_PASSAGE_FIELDS, search_params={"metric_type": "COSINE"},
        )[0]
        return [_passage(hit, float(hit["distance"])) for hit in hits]

    def keyword_search(self, query: str, limit: int) -> list[Passage]:
        """Best-first by BM25 over jieba tokens. Milvus Lite reports BM25 negated (best = most
        negative) where a Milvus server reports it positive; both come back best-first, and
        the score is returned as a positive number either way."""
        if not query.strip() or not self.has_collection():
            return []
        hits = self._client.search(
            self._collection, data=[query], anns_field="sparse", limit=limit,
            output_fields=_PASSAGE_FIELDS, search_params={"metric_type": "BM25"},
        )[0]
        return [_passage(hit, abs(float(hit["distance"]))) for hit in hits]

    def _all_rows(self, fields: list[str]) -> list[dict[str, Any]]:
        if not self.has_collection():
            return []
        if self._is_local:  # Milvus Lite has no query iterator, and no 16384-row query cap
            return list(self._client.query(self._collection, filter='chunk_id != ""', output_fields=fields, limit=_LITE_MAX_ROWS))
        rows: list[dict[str, Any]] = []
        iterator = self._client.query_iterator(self._collection, batch_size=1000, filter='chunk_id != ""', output_fields=fields)
        try:
            while batch := iterator.next():
                rows.extend(batch)
        finally:
            iterator.close()
        return rows


def _passage(hit: dict[str, Any], score: float) -> Passage:
    entity = hit["entity"]
    return Passage(str(hit["chunk_id"]), entity["doc_id"], entity["source"], entity["title"], entity["text"], score)


def clip_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``max_bytes``."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _indexed_text(chunk: Chunk) -> str:
    """Index the title with the chunk: a heading often carries the words users ask with."""
    return chunk.text if chunk.text.startswith(chunk.title) else f"{chunk.title}\n{chunk.text}"


def _connect(uri: str) -> Any:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if "://" not in uri:
        Path(uri).mkdir(parents=True, exist_ok=True)
        _require_unlocked(Path(uri))
    try:
        return MilvusClient(uri)
    except MilvusException as exc:
        raise KnowledgeBaseError(f"cannot open the knowledge base at {uri}: {exc}") from exc


def _require_unlocked(data_dir: Path) -> None:
    """Milvus Lite holds an flock on ``LOCK``; probe it to give a useful error, not a trace."""
    import fcntl

    fd = os.open(data_dir / "LOCK", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError as exc:
        raise KnowledgeBaseBusy(
            f"the knowledge base {data_dir} is open in another process (Milvus Lite allows one): "
            "stop the running `wxassist up` first, or serve the KB from Milvus (WXA_KB_URI=http://…)"
        ) from exc
    finally:
        os.close(fd)
