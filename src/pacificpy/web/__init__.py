"""The web layer of the task system: HTTP views over ``pacificpy.background``.

Each module gives a Starlette route list, and a ``mount_*`` function that
:class:`~pacificpy.PacificPy` calls to add it (``include_task_dashboard``,
``include_metrics``, ``include_task_events``):

- :mod:`pacificpy.web.dashboard`: the task dashboard page and its JSON API;
- :mod:`pacificpy.web.metrics`: the Prometheus ``/metrics`` route;
- :mod:`pacificpy.web.events`: one task's live events (Server-Sent Events);
- :mod:`pacificpy.web.auth`: the bearer-token checks they share.

The dependency points one way: this package imports ``pacificpy.background``, never the
other way round (``tests/test_architecture.py`` holds the rule).
"""
