"""Handles to the functions: a deployment class run in this process behind the Serve handle
interface (fused mode, the eval command, benchmarks, tests), and Serve handles that carry
the message's trace."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from observability.tracing import TracedHandle


class InProcessHandle:
    """A deployment class run in the calling process behind the handle interface:
    ``handle.method.remote(...)`` awaits the method in a thread, as a replica would run it,
    or, with ``inline``, calls it on the event loop (for sub-millisecond CPU work, where the
    hop to a thread and back costs more than the call). Fused mode, benchmarks and tests."""

    def __init__(self, target: Any, *, inline: bool = False):
        self._target = target
        self._inline = inline

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        inline = self._inline

        class _Call:
            @staticmethod
            def remote(*args: Any, **kwargs: Any):
                if inspect.iscoroutinefunction(method):
                    return method(*args, **kwargs)
                if inline:
                    return _completed(method, *args, **kwargs)
                return asyncio.to_thread(method, *args, **kwargs)

        return _Call()


async def _completed(method, *args: Any, **kwargs: Any) -> Any:
    return method(*args, **kwargs)


def fused_steps(settings_overrides: dict[str, Any] | None) -> tuple[InProcessHandle, InProcessHandle, InProcessHandle]:
    """Decrypt, intent and encrypt inside the calling process (fused mode, and the bench's
    in-process floor). Decrypting and encrypting one message take well under a millisecond,
    so a thread hop would cost more than the work; intent may embed the question (kNN): a thread."""
    from functions.decrypt.deployment import DecryptServer
    from functions.encrypt.deployment import EncryptServer
    from functions.intent.deployment import IntentServer

    return (InProcessHandle(DecryptServer(settings_overrides), inline=True),
            InProcessHandle(IntentServer(settings_overrides)),
            InProcessHandle(EncryptServer(settings_overrides), inline=True))


def carrying_trace(handle: Any) -> Any:
    """A Serve handle's calls carry the message's trace to the replica. An in-process one
    needs nothing: its spans find the caller's in the context."""
    return handle if isinstance(handle, InProcessHandle) else TracedHandle(handle)


