"""Autoscaling for generate: the deadline-aware policy Serve runs (``policy.py``), the
baselines it is compared with, and the trace-driven simulator behind
``wxassist simulate-scaling``."""
