"""Logging now; tracing, metrics and dashboards join here (the observability issue)."""
