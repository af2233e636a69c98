"""Tracing set-up of a worker process: spans go, one JSON line each, to a file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from pacificpy.background.tracing import enable_tracing

#: Environment variable naming the file a worker appends its finished spans to.
SPAN_FILE_ENV = "PACIFICPY_TEST_SPAN_FILE"


class JsonLinesSpanExporter(SpanExporter):
    """Append one JSON line per finished span to ``path`` (safe across forked processes).

    Args:
        path: the file to append to.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.context
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
                        "span_id": f"{ctx.span_id:016x}" if ctx else None,
                        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        "attributes": dict(span.attributes or {}),
                        "pid": os.getpid(),
                    }
                )
                + "\n"
            )
        # One O_APPEND write per batch: lines of concurrent pool processes never interleave.
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def setup_worker_tracing() -> TracerProvider:
    """Set the global tracer provider (spans to ``$PACIFICPY_TEST_SPAN_FILE``), enable tracing."""
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(JsonLinesSpanExporter(os.environ[SPAN_FILE_ENV]))
    )
    trace.set_tracer_provider(provider)
    enable_tracing()
    return provider
