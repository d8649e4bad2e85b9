"""push: the customer-service message path for answers that miss the passive window.

Built by the delivery issue (claim ledger, durable outbox, access-token cache); the passive
path in this release answers inside the callback and never needs it.
"""
