"""The knowledge base: the embedder (``embedding.py``), the Milvus collection of passages with
its dense and BM25 searches (``store.py``), and the answer cache beside it
(``answer_cache.py``). Retrieve searches it, intent embeds with its embedder, ``knowledge/``
ingests into it."""
