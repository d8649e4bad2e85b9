"""The knowledge base's ingest side: load documents, chunk, embed, upsert; the sample corpus."""

from pathlib import Path

SAMPLE_CORPUS_DIR = Path(__file__).parent / "corpus"
