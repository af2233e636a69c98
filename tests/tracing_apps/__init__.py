"""Worker modules for the cross-process tracing tests (tests/background/test_tracing_workers.py).

Each worker process sets up an OpenTelemetry tracer provider whose exporter appends one
JSON line per finished span to the file named by ``PACIFICPY_TEST_SPAN_FILE``, switches
PacificPy tracing on, and configures its backend on a Redis database of its own.
"""
