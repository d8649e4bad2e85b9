"""retrieve: hybrid dense + BM25 search over the knowledge base."""
