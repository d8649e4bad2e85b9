from __future__ import annotations

from functions.common.delivery import DeliveryPolicy

POLICY = DeliveryPolicy(window_s=4.5, deliveries=3, redelivery_interval_s=5.0, tokens_per_s=10, min_new_tokens=16, overhead_s=1.0)


def test_the_third_delivery_is_the_last_by_count_or_by_clock():
    assert not POLICY.is_last_delivery(1, first_seen_s=100, now_s=100)
    assert not POLICY.is_last_delivery(2, first_seen_s=100, now_s=105)
    assert POLICY.is_last_delivery(3, first_seen_s=100, now_s=110)
    assert POLICY.is_last_delivery(2, first_seen_s=100, now_s=109.6)  # the second never reached us


def test_the_token_budget_shrinks_toward_the_last_window():
    assert POLICY.passive_deadline_s(100) == 114.5
    assert POLICY.token_budget(100, now_s=100, max_new_tokens=96) == 96  # 13.5 s left: capped
    assert POLICY.token_budget(100, now_s=108, max_new_tokens=96) == 55  # 5.5 s left
    assert POLICY.token_budget(100, now_s=114, max_new_tokens=96) == 16  # never below the floor
