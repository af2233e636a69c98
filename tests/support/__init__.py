"""Helpers for PacificPy's own tests: free ports, a private redis-server, a real uvicorn."""

from __future__ import annotations
