"""encrypt: render the passive reply (text or handoff), split to WeChat limits, seal it."""
