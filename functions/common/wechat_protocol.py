"""Facts of WeChat's callback protocol that the service plans around (and the emulator plays)."""

from __future__ import annotations

# A callback is delivered up to three times: each waits 5 s for the answer, the next comes
# about 5 s after the previous one gave up.
DELIVERY_ATTEMPTS = 3
DELIVERY_TIMEOUT_S = 5.0
REDELIVERY_INTERVAL_S = 5.0
