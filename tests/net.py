"""Loopback helpers for tests that start servers."""

from __future__ import annotations

from functions.common.platform_api import free_port

__all__ = ["free_port"]
