"""One trace per WeChat message, across the ingress and every replica it calls.

* Each process configures its tracer once (``configure_tracing``): spans go to a JSONL file
  per process under ``WXA_TRACE_DIR`` (default ``$WXA_HOME/traces``, which ``wxassist trace``
  reads), to OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, to the console, to the SDK's
  in-memory exporter (tests), or nowhere. Sampling and resource attributes follow the
  standard ``OTEL_*`` variables (the SDK reads them).
* Context crosses Ray Serve handles as a W3C ``traceparent`` in a ``_trace`` keyword:
  ``TracedHandle`` adds it to every call made inside a span, and ``@traced`` on the replica's
  method takes it out and opens the function's span as that call's child.
* Attributes say what happened, never what was said: no message text, no secrets, user ids
  hashed (``tests/serve/test_observability.py`` greps every span file and Ray log to prove it).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "wxassist"
TRACE_KWARG = "_trace"  # the carrier's keyword on every traced deployment method
_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None
_memory = None  # the in-memory exporter, when that is the one configured

log = logging.getLogger("wxassist.tracing")


# ---- set-up ------------------------------------------------------------------------------


def exporter_choice(requested: str, environ: Mapping[str, str] | None = None) -> str:
    """``auto`` resolves from the standard variables: ``OTEL_SDK_DISABLED``, then
    ``OTEL_TRACES_EXPORTER``, then OTLP if an endpoint is set, else the local file."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    if requested != "auto":
        return requested
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named in ("otlp", "console", "none"):
        return named
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return "file"


def configure_tracing(function: str, exporter: str, trace_dir: Path, file_max_bytes: int) -> None:
    """Once per process (later calls keep the first set-up): a replica is one process."""
    global _provider, _memory
    with _lock:
        if _provider is not None:
            return
        choice = exporter_choice(exporter)
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "wxassist"),
                                    "wxassist.function": function})
        provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER, parent-based by default
        if choice == "file":
            provider.add_span_processor(BatchSpanProcessor(JsonlSpanExporter(trace_dir, function, file_max_bytes),
                                                           schedule_delay_millis=500))
        elif choice == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif choice == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        elif choice == "memory":
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            _memory = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(_memory))
        _provider = provider


def use_provider(provider: TracerProvider | None, memory=None) -> None:
    """Tests: trace into a provider of their own (None: back to unconfigured)."""
    global _provider, _memory
    with _lock:
        _provider, _memory = provider, memory


def _otlp_exporter() -> SpanExporter:
    """gRPC or HTTP per ``OTEL_EXPORTER_OTLP_PROTOCOL`` (the spec's default: http/protobuf);
    endpoint, headers, certificates and timeouts come from the standard variables."""
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def tracer() -> trace.Tracer:
    provider = _provider
    return provider.get_tracer(TRACER_NAME) if provider is not None else trace.NoOpTracer()


def finished_spans() -> list[dict[str, Any]]:
    """The spans the in-memory exporter holds in this process, as records; [] otherwise."""
    return [span_record(span) for span in _memory.get_finished_spans()] if _memory is not None else []


class ReportsSpans:
    """For deployments: tests fetch a replica's in-memory spans through its handle."""

    def finished_spans(self) -> list[dict[str, Any]]:
        """Spans this replica's in-memory exporter holds (WXA_TRACE_EXPORTER=memory; tests)."""
        return finished_spans()


# ---- propagation ------------------------------------------------------------------------


def inject() -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    return _PROPAGATOR.extract(carrier or {})


def current_traceparent() -> str:
    return inject().get("traceparent", "")


def link_to(traceparent: str) -> Link | None:
    span_context = trace.get_current_span(extract({"traceparent": traceparent})).get_span_context()
    return Link(span_context) if span_context.is_valid else None


def detached_context() -> contextvars.Context:
    """A fresh context that keeps only the current trace: for tasks that must outlive the
    request that started them (Ray Serve cancels a request's context when it ends)."""
    fresh = contextvars.Context()
    fresh.run(otel_context.attach, otel_context.get_current())
    return fresh


def in_span() -> bool:
    return trace.get_current_span().get_span_context().is_valid


class TracedHandle:
    """A deployment handle whose calls carry the current trace, so the replica's span is the
    caller's child. Outside any span it adds nothing (start-up probes, background work)."""

    def __init__(self, handle: Any):
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        return _TracedMethod(getattr(self._handle, name))


def untraced(handle: Any) -> Any:
    """The handle without the trace carrier, for calls that are not part of any message's
    work (asking a deployment what it can do) and whose method is not ``traced``."""
    return handle._handle if isinstance(handle, TracedHandle) else handle


class _TracedMethod:
    __slots__ = ("_method",)

    def __init__(self, method: Any):
        self._method = method

    def remote(self, *args: Any, **kwargs: Any):
        if in_span():
            kwargs[TRACE_KWARG] = inject()
        return self._method.remote(*args, **kwargs)


def traced(function: str, kind: SpanKind = SpanKind.SERVER) -> Callable:
    """Runs a deployment method in a span named after its function, child of the caller's
    ``_trace`` carrier. The method may set attributes on ``trace.get_current_span()``."""

    def decorate(method: Callable) -> Callable:
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _server_span(function, method.__name__, kwargs.pop(TRACE_KWARG, None), kind):
                    return await method(*args, **kwargs)

            return run_async

        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _server_span(function, method.__name__, kwargs.pop(TRACE_KWARG, None), kind):
                return method(*args, **kwargs)

        return run

    return decorate


@contextmanager
def _server_span(function: str, method: str, carrier: Mapping[str, str] | None, kind: SpanKind) -> Iterator[Any]:
    if carrier is None and not in_span():  # not called from inside a trace: no orphan root spans
        yield trace.INVALID_SPAN
        return
    # No carrier inside a span: called in-process (fused mode), the caller's span is current.
    parent = extract(carrier) if carrier is not None else None
    with start_span(function, context=parent, kind=kind, attributes={"wxassist.method": method}) as span:
        yield span


@contextmanager
def start_span(name: str, **options: Any) -> Iterator[Any]:
    """A current span that records an escaping exception by its type only. The SDK's default
    would add the exception's message and stack as a span event, and a message can quote
    what the user wrote."""
    with tracer().start_as_current_span(name, record_exception=False, set_status_on_exception=False,
                                        **options) as span:
        try:
            yield span
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                record_error(span, exc)
            raise


def record_error(span: Any, exc: BaseException) -> None:
    """The error's type only: exception messages can quote user input."""
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def set_attributes(**attributes: Any) -> None:
    """On the current span; None values are left out (OTel attributes cannot be None)."""
    span = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)


# ---- records and the local file ---------------------------------------------------------


def span_record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    start_ns, end_ns = span.start_time or 0, span.end_time or span.start_time or 0
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start": start_ns / 1e9,
        "duration_ms": round((end_ns - start_ns) / 1e6, 3),
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "links": [{"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
                  for link in span.links],
        "function": (span.resource.attributes.get("wxassist.function") if span.resource else None),
    }


class JsonlSpanExporter(SpanExporter):
    """One JSON line per span, one file per process (replicas never interleave writes). A
    file past ``max_bytes`` becomes ``….jsonl.1`` (replacing the one before): at most twice
    that per process on disk, however long the service runs."""

    def __init__(self, directory: Path, function: str, max_bytes: int = 64 * 1024 * 1024):
        self._path = Path(directory) / f"{function}-{os.getpid()}.jsonl"
        self._max_bytes = max_bytes
        self._write_lock = threading.Lock()
        self._path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span), ensure_ascii=False, default=str) + "\n" for span in spans)
        try:
            with self._write_lock:
                with self._path.open("a", encoding="utf-8") as out:
                    out.write(lines)
                    full = out.tell() > self._max_bytes
                if full:
                    self._path.replace(self._path.with_name(self._path.name + ".1"))
        except OSError as exc:
            log.warning("trace file %s not writable: %s", self._path, type(exc).__name__)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def configure_for(function: str, settings) -> None:
    """A replica's observability from the settings object: log lines stamped with trace
    ids at the configured level, and the tracer (exporter, trace directory)."""
    from observability.logs import configure_logging

    configure_logging(settings.log_level)
    configure_tracing(function, settings.trace_exporter, settings.trace_dir_path(), settings.trace_file_mb * 1024 * 1024)
