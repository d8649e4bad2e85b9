"""The shared kernel every layer may use: typed records, settings, the error hierarchy,
clocks, text measures, WeChat's crypto, safe XML and protocol facts, the state stores (claim
ledger, job journal, outbox, continuations, conversation memory, rate limits) and the
sensitive-word filter. It imports nothing of the service above it."""
