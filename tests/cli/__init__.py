"""Tests of the ``pacificpy`` command line."""

from __future__ import annotations
