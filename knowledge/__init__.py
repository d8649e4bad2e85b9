"""The knowledge base's ingest side: load documents, chunk, embed, upsert; the sample corpus."""

from pathlib import Path

SAMPLE_CORPUS_DIR = Path(__file__).parent / "corpus"
SAMPLE_BUSINESS_INFO = Path(__file__).parent / "structured" / "business.json"  # 青禾家居's hotline and stores
