"""Structured, content-free log lines.

User ids are hashed and message text is never logged: an operator can follow one user's
messages without the log being a copy of their conversation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

LOGGER_NAME = "wxassist"


def hashed_user(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:12]


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def log_event(event: str, **fields: object) -> None:
    """One line per event; JSON when WXA_LOG_JSON=1, ``key=value`` otherwise."""
    log = logger()
    if not log.isEnabledFor(logging.INFO):
        return
    if os.environ.get("WXA_LOG_JSON") == "1":
        log.info(json.dumps({"event": event, **fields}, ensure_ascii=False, default=str))
    else:
        log.info(" ".join([event, *(f"{key}={value}" for key, value in fields.items())]))


def audit_event(event: str, **fields: object) -> None:
    """A decision operators must be able to account for (filters, limits), on its own logger
    (``wxassist.audit``) so it can be routed to its own file. Never message content."""
    logging.getLogger(f"{LOGGER_NAME}.audit").info(
        json.dumps({"event": event, **fields}, ensure_ascii=False, default=str)
    )


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def quiet_libraries() -> None:
    """Progress bars from transformers and the hub are noise in a service's log."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # jieba logs its dictionary loading at DEBUG on a logger it sets to DEBUG itself.
    logging.getLogger("jieba").setLevel(logging.WARNING)
    # Milvus Lite's in-process gRPC server logs a traceback at ERROR for every call pymilvus
    # makes to an RPC it does not implement (AllocTimestamp), which pymilvus then handles.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
