"""The task dashboard: ``app.include_task_dashboard(path="/_tasks", token=None)``.

An HTML page at ``path`` (hand-written HTML and a little JavaScript, no build step) over a
JSON API under ``path + "/api/"``:

====== ================================ ================================================
GET    ``tasks?status=&name=&limit=``   recent task records, newest first
GET    ``tasks/{id}``                   one record (404 if unknown)
GET    ``stats``                        ``get_task_monitor().stats()`` + backend name +
                                        ``throttled`` (held-back starts per task)
GET    ``queues``                       queue lengths of the queues seen
GET    ``workers``                      the worker registry: live and lost workers,
                                        each with the tasks it runs
GET    ``dead-letters?limit=``          dead letters of the configured backend
GET    ``schedules``                    periodic tasks: expression, zone, last run and
                                        its status, next run
POST   ``dead-letters/{id}/requeue``    requeue one (a fresh first attempt, same task id);
                                        404 unknown id, 409 not requeueable, 422 no longer
                                        decodes (the letter stays), 503 backend refused
POST   ``dead-letters/purge``           delete them all
POST   ``tasks/{id}/cancel``            cancel a task (``handle.cancel()``); 409 if it had
                                        finished (nothing changed)
====== ================================ ================================================

The page holds no data, so it is served to anyone; it asks for the token (a form, or a
``#token=`` fragment, which never reaches the server) and sends it to the API. With
``token`` set, every API route needs ``Authorization: Bearer <token>``: 401 without it,
403 with a wrong or empty one; a ``?token=`` query authenticates nothing. An empty or blank
token is a ``ConfigurationError`` at mount time. Without a token the POST routes always
answer 403, so nothing changes without one. Argument previews hide the values of
arguments and keys named like ``password``, ``token``, ``secret`` or ``authorization``;
raw message bytes are never sent.

:func:`dashboard_routes` returns these routes as a Starlette route list;
:func:`mount_dashboard` (what ``include_task_dashboard`` calls) adds them to an app.
"""

from __future__ import annotations

import importlib.resources
import logging
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute

from pacificpy.background import get_backend
from pacificpy.background.dead_letter import dead_letter_view
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.workers import workers_view
from pacificpy.errors import DeadLetterNotRequeueable, DeadLetterUndecodable, EnqueueError
from pacificpy.routing import Handler, Route
from pacificpy.web.auth import checked_token, require_token

if TYPE_CHECKING:
    from starlette.requests import Request

    from pacificpy.app import PacificPy

__all__ = ["dashboard_routes", "mount_dashboard", "page_html"]

# The name the dashboard has always logged under, which logging configurations refer to.
logger = logging.getLogger("pacificpy.background.dashboard")

MAX_LIMIT = 1000

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}


def page_html(*, token_required: bool = False) -> str:
    """The dashboard page (packaged as ``pacificpy/web/static/index.html``).

    With ``token_required`` the body is marked so that the first paint is the token form.
    That is no data: the page is the same for every visitor.
    """
    html = (
        importlib.resources.files("pacificpy.web")
        .joinpath("static/index.html")
        .read_text(encoding="utf-8")
    )
    if token_required:
        html = html.replace("<body>", '<body data-token="required">', 1)
    return html


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"limit must be an integer, not {raw!r}") from None
    if value < 1:
        raise HTTPException(400, "limit must be at least 1")
    return min(value, MAX_LIMIT)


def mount_dashboard(app: PacificPy, path: str = "/_tasks", token: str | None = None) -> None:
    """Add the dashboard page and its JSON API to ``app`` under ``path``.

    ``app.include_task_dashboard(path, token)`` calls this; see :func:`dashboard_routes`.

    Raises:
        ConfigurationError: ``token`` is empty or blank.
    """
    app.router.routes.extend(dashboard_routes(path, token))


def dashboard_routes(path: str = "/_tasks", token: str | None = None) -> list[BaseRoute]:
    """The dashboard page and its JSON API under ``path``, as a Starlette route list.

    Args:
        path: where the page is served; the API is under ``path + "/api/"``.
        token: when given, every API route needs ``Authorization: Bearer <token>``;
            without it the mutating routes (requeue, purge, cancel) answer 403.

    Raises:
        ConfigurationError: ``token`` is empty or blank.
    """
    token = checked_token(token, where="include_task_dashboard")
    base = "/" + path.strip("/") if path.strip("/") else ""
    api = base + "/api"
    html = page_html(token_required=token is not None)

    def guard(request: Request) -> None:
        require_token(request, token)

    def guard_mutation(request: Request) -> None:
        if token is None:
            raise HTTPException(
                403,
                "Requeue, purge and cancel need a dashboard token: "
                "app.include_task_dashboard(token=...)",
            )
        guard(request)

    # Plain functions: Starlette runs them in its thread pool, so the Redis monitor store
    # and the backends' blocking calls never hold up the event loop.
    def page(request: Request) -> HTMLResponse:
        # No data in it: the page asks for the token and sends it to the API itself.
        return HTMLResponse(html, headers=_SECURITY_HEADERS)

    def tasks(request: Request) -> dict[str, Any]:
        guard(request)
        status = request.query_params.get("status") or None
        name = request.query_params.get("name") or None
        try:
            records = get_task_monitor().list(status=status, name=name, limit=_limit(request))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"tasks": [r.to_dict() for r in records]}

    def task(request: Request) -> dict[str, Any]:
        guard(request)
        task_id = request.path_params["task_id"]
        record = get_task_monitor().get(task_id)
        if record is None:
            raise HTTPException(404, f"No task with id {task_id!r} in the monitor")
        return record.to_dict()

    def stats(request: Request) -> dict[str, Any]:
        guard(request)
        monitor = get_task_monitor()
        result = monitor.stats()
        result["backend"] = get_backend().kind
        result["monitor"] = type(monitor.store).__name__
        result["monitor_enabled"] = monitor.enabled
        totals = monitor.metrics().totals
        result["throttled"] = {n: c for (n, status), c in totals.items() if status == "throttled"}
        return result

    def queues(request: Request) -> dict[str, Any]:
        guard(request)
        backend = get_backend()
        names = sorted(get_task_monitor().metrics().queues | {"default"})
        out = []
        for name in names:
            try:
                out.append({"name": name, "length": backend.queue_length_sync(name)})
            except Exception as exc:
                logger.warning("could not read the length of queue %s: %s", name, exc)
                out.append({"name": name, "length": None, "error": str(exc)})
        return {"queues": out}

    def workers(request: Request) -> dict[str, Any]:
        guard(request)
        return workers_view(get_backend())

    def dead_letters(request: Request) -> dict[str, Any]:
        guard(request)
        letters = get_backend().dead_letters_sync(_limit(request))
        return {"dead_letters": [dead_letter_view(letter) for letter in letters]}

    def schedules(request: Request) -> dict[str, Any]:
        guard(request)
        from pacificpy.background.schedules import schedule_views

        return {"schedules": [v.to_dict() for v in schedule_views(get_backend())]}

    def requeue(request: Request) -> dict[str, Any]:
        guard_mutation(request)
        letter_id = request.path_params["letter_id"]
        try:
            task_id = get_backend().requeue_dead_letter_sync(letter_id)
        except KeyError:
            raise HTTPException(404, f"No dead letter with id {letter_id!r}") from None
        except DeadLetterNotRequeueable as exc:
            raise HTTPException(409, str(exc)) from None
        except DeadLetterUndecodable as exc:
            logger.warning("dead letter %s not requeued: %s", letter_id, exc)
            raise HTTPException(422, str(exc)) from None
        except EnqueueError as exc:
            logger.error("dead letter %s not requeued, kept: %s", letter_id, exc)
            raise HTTPException(
                503, f"Not requeued, the dead letter is kept: {exc}", {"Retry-After": "5"}
            ) from None
        logger.info("dead letter %s requeued from the dashboard as task %s", letter_id, task_id)
        return {"requeued": letter_id, "task_id": task_id}

    def purge(request: Request) -> dict[str, Any]:
        guard_mutation(request)
        purged = get_backend().purge_dead_letters_sync()
        logger.info("%d dead letters purged from the dashboard", purged)
        return {"purged": purged}

    def cancel(request: Request) -> dict[str, Any]:
        guard_mutation(request)
        task_id = request.path_params["task_id"]
        if not get_backend().get_handle(task_id).cancel_sync():
            raise HTTPException(409, f"Task {task_id!r} had already finished; nothing changed")
        logger.info("task %s cancelled from the dashboard", task_id)
        return {"cancelled": task_id}

    def get(route_path: str, handler: Handler) -> Route:
        return Route(route_path, handler, methods=["GET"], include_in_schema=False)

    def post(route_path: str, handler: Handler) -> Route:
        return Route(route_path, handler, methods=["POST"], include_in_schema=False)

    return [
        get(base or "/", page),
        get(api + "/tasks", tasks),
        get(api + "/tasks/{task_id}", task),
        get(api + "/stats", stats),
        get(api + "/queues", queues),
        get(api + "/workers", workers),
        get(api + "/dead-letters", dead_letters),
        get(api + "/schedules", schedules),
        post(api + "/dead-letters/purge", purge),
        post(api + "/dead-letters/{letter_id}/requeue", requeue),
        post(api + "/tasks/{task_id}/cancel", cancel),
    ]
