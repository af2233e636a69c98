"""PacificPy's benchmarks against its peers, in one harness (see ``bench/README.md``).

Run every scenario with ``python -m bench all`` (``--quick`` for a short smoke run), or one
with ``python -m bench http|local|redis|memory|pickup``; ``python -m bench report`` rebuilds
``docs/benchmarks.md`` and the chart from the stored results.
"""
