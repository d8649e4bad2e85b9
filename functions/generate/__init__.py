"""generate: the LLM answer, from a plain class with its engine injected."""
