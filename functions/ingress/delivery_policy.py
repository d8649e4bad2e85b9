"""WeChat's delivery clock, as decisions. Pure: the delivery coordinator asks, the clock is
passed in.

WeChat waits about 5 s for each delivery and tries three times, about 5 s apart, so a
message's passive reply can arrive until about 15 s after the first delivery. The generation
budget is what fits before the last window closes.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.common.wechat_protocol import DELIVERY_ATTEMPTS, DELIVERY_TIMEOUT_S, REDELIVERY_INTERVAL_S


@dataclass(frozen=True)
class DeliveryPolicy:
    window_s: float = DELIVERY_TIMEOUT_S - 0.5  # how long one delivery waits before WeChat gives up
    deliveries: int = DELIVERY_ATTEMPTS
    redelivery_interval_s: float = REDELIVERY_INTERVAL_S
    tokens_per_s: float = 12.0  # generate's measured speed (2-core CPU demo: ≈12)
    min_new_tokens: int = 16
    overhead_s: float = 1.0  # prompt, retrieval and the hops around generation
    # The last delivery stops this much earlier: a passive reply sent near the end of its
    # window can reach WeChat after it hung up (proxy queues, the network), and no delivery
    # comes after it to try again. An answer ready later goes by the overflow instead.
    last_reply_margin_s: float = 1.0

    def is_last_delivery(self, deliveries_seen: int, first_seen_s: float, now_s: float) -> bool:
        """The last delivery, counted, or by the clock when earlier deliveries never reached us."""
        last_arrival_s = (self.deliveries - 1) * self.redelivery_interval_s
        return deliveries_seen >= self.deliveries or now_s - first_seen_s >= last_arrival_s - 0.5

    def passive_deadline_s(self, first_seen_s: float) -> float:
        return first_seen_s + (self.deliveries - 1) * self.redelivery_interval_s + self.window_s

    def last_reply_margin(self) -> float:
        """How much earlier than its window the last delivery stops waiting (a short window,
        in tests, keeps three quarters of itself)."""
        return min(self.last_reply_margin_s, self.window_s / 4)

    def answer_deadline_s(self, first_seen_s: float) -> float:
        """When the answer must be ready to go back passively: the last delivery stops waiting
        then. What generate is told, so it budgets for this, not for the window's end."""
        return self.passive_deadline_s(first_seen_s) - self.last_reply_margin()

    def token_budget(self, first_seen_s: float, now_s: float, max_new_tokens: int) -> int:
        """Tokens that still fit before the last passive window closes, within [min, max]."""
        left_s = self.passive_deadline_s(first_seen_s) - now_s - self.overhead_s
        return max(self.min_new_tokens, min(max_new_tokens, int(left_s * self.tokens_per_s)))

