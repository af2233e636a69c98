"""A pytest plugin for Starlette's own suite: ``Starlette`` is ``PacificPy``, renamed.

Loaded with ``-p starlette_rename`` before any test module is imported, it rebinds
``starlette.applications.Starlette`` to :class:`pacificpy.PacificPy` itself (no subclass,
no constructor adapter), so every ``from starlette.applications import Starlette`` in the
suite builds a PacificPy app exactly as a user who changed one class name would.
"""

from __future__ import annotations

import starlette.applications

from pacificpy import PacificPy

starlette.applications.Starlette = PacificPy  # type: ignore[misc]
