"""Small applications that tests serve with a real server."""

from __future__ import annotations
