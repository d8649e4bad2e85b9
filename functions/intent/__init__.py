"""intent: decide what kind of answer a message needs."""
