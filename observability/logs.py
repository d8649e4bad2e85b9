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
EVENT_FIELDS = "wxassist_fields"  # a record attribute: an event's fields, for JSON lines


def hashed_user(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:12]


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def log_event(event: str, **fields: object) -> None:
    """One line per event: ``event key=value …`` as text; the fields travel on the record
    too, so JSON lines (WXA_LOG_JSON=1) carry them as fields, not as an escaped string."""
    log = logger()
    if log.isEnabledFor(logging.INFO):
        log.info(" ".join([event, *(f"{key}={value}" for key, value in fields.items())]),
                 extra={EVENT_FIELDS: {"event": event, **fields}})


def audit_event(event: str, **fields: object) -> None:
    """A decision operators must be able to account for (filters, limits), on its own logger
    (``wxassist.audit``) so it can be routed to its own file. Never message content."""
    record = {"event": event, **fields}
    logging.getLogger(f"{LOGGER_NAME}.audit").info(json.dumps(record, ensure_ascii=False, default=str),
                                                   extra={EVENT_FIELDS: record})


class TraceIds(logging.Filter):
    """Stamps each record with the current span's trace and span ids ("-" outside a trace),
    so a log line leads to its message's trace (``wxassist trace``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        record.trace_id = f"{context.trace_id:032x}" if context.is_valid else "-"
        record.span_id = f"{context.span_id:016x}" if context.is_valid else "-"
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "trace_id": getattr(record, "trace_id", "-"), "span_id": getattr(record, "span_id", "-")}
        fields = getattr(record, EVENT_FIELDS, None)  # an event's own fields, not its text rendering
        line.update(fields if fields is not None else {"message": record.getMessage()})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (as logging's last-resort handler
    does): a stream captured when the handler was made may be closed by the time a
    library logs from an exit hook."""

    @property
    def stream(self):
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s trace=%(trace_id)s span=%(span_id)s %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Every line carries trace and span ids; JSON lines when WXA_LOG_JSON=1."""
    root = logging.getLogger()
    if not any(isinstance(f, TraceIds) for handler in root.handlers for f in handler.filters):
        handler = _CurrentStderr()
        handler.addFilter(TraceIds())
        root.addHandler(handler)
    for handler in root.handlers:
        if any(isinstance(f, TraceIds) for f in handler.filters):
            handler.setFormatter(JsonLines() if os.environ.get("WXA_LOG_JSON") == "1" else logging.Formatter(TEXT_FORMAT))
    root.setLevel(level)
    # Every process (CLI, replicas) comes here. HTTP clients log request URLs at DEBUG, and
    # WeChat's API takes the app secret and the access token in the query string: even
    # WXA_LOG_LEVEL=DEBUG must not write them down.
    for name in ("urllib3", "requests", "httpx", "httpcore", "botocore", "boto3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
