"""push: answers that miss WeChat's passive window reach the user through the
customer-service API (客服消息), from the durable outbox, with a shared access token, backoff,
WeChat's per-user quota and 48-hour window, and dead letters for what cannot be sent."""
