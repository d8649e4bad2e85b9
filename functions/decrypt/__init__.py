"""decrypt: verify a WeChat callback or URL check and open it into an ``InboundMessage``."""
