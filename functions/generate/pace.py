"""How fast this replica generates right now, and so how many tokens fit before a deadline.

With continuous batching a request's speed depends on how many others share its forward
passes: the same replica that gives one user 15 tokens/s gives each of 16 users 5. A fixed
tokens-per-second setting is wrong in one direction or the other, so the replica measures
it: every answer updates a moving average of wall seconds per generated token, the prompt
and the waiting for a place in the running batch included. The wait for a thread before
that is not: the deadline is read after it, so it is already spent.
"""

from __future__ import annotations

import threading


class DecodePace:
    def __init__(self, initial_tokens_per_s: float, *, smoothing: float = 0.3, min_new_tokens: int = 16,
                 margin_s: float = 0.3):
        self._seconds_per_token = 1.0 / initial_tokens_per_s
        self._smoothing = smoothing
        self._min_new_tokens = min_new_tokens
        self._margin_s = margin_s  # the clean-up, the checks and the hop back after generation
        self._lock = threading.Lock()

    def observe(self, elapsed_s: float, tokens_out: int) -> None:
        if tokens_out < 1 or elapsed_s <= 0:
            return
        with self._lock:
            sample = elapsed_s / tokens_out
            self._seconds_per_token += self._smoothing * (sample - self._seconds_per_token)

    @property
    def tokens_per_s(self) -> float:
        return 1.0 / self._seconds_per_token

    def seconds_for(self, tokens: int) -> float:
        """How long ``tokens`` take at the current pace, with the margin."""
        return tokens * self._seconds_per_token + self._margin_s

    def affordable(self, seconds_left: float, cap: int) -> int:
        """Tokens that fit in ``seconds_left`` at the current pace, within [min, cap]: an
        answer cut below the floor says too little to be worth sending early."""
        fits = int((seconds_left - self._margin_s) / self._seconds_per_token)
        return max(min(self._min_new_tokens, cap), min(cap, fits))
