"""``pacificpy tasks``: inspect tasks and the dead-letter queue from the command line.

``-A/--app MODULE`` (or ``PACIFICPY_APP``) names the module that configures the backend
and the monitor, as ``celery -A`` does; it is imported from the current directory::

    pacificpy tasks -A myapp stats
    pacificpy tasks -A myapp list --status failed --limit 20
    pacificpy tasks -A myapp dlq list
    pacificpy tasks -A myapp dlq requeue LETTER_ID
    pacificpy tasks -A myapp dlq purge --yes
    pacificpy tasks -A myapp cancel TASK_ID [--terminate]
    pacificpy tasks -A myapp schedules
    pacificpy tasks -A myapp workers

Task records come from the monitor the module configures, so they cover other processes
only with the Redis monitor store (``configure_task_monitor(redis_url=...)``); dead letters
come from the configured backend (Celery and ARQ keep them in Redis).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pacificpy.background import config
from pacificpy.cli._loading import load_module, split_spec

__all__ = ["command"]

_STYLES = {
    "completed": "green",
    "failed": "red",
    "dead": "red",
    "running": "blue",
    "retrying": "yellow",
    "queued": "cyan",
    "abandoned": "magenta",
    "cancelled": "magenta",
}


def _console() -> Console:
    return Console(soft_wrap=False)


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _cell(text: str | None, style: str = "") -> Text:
    """A table cell of task data: plain text, never parsed as rich markup (an error text
    ``[/x]`` or ``[link=...]`` shows as written)."""
    return Text(text or "", style=style)


def _status(status: str) -> Text:
    return _cell(status, _STYLES.get(status, ""))


def _cut(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


#: Below this many columns, lists print one block per task instead of a table, so that
#: every column stays readable and no id is cut.
COMPACT_WIDTH = 120
#: What ``_app`` answers for a process that configured its backend itself.
THIS_PROCESS = "this process"


def _note_if_local_monitor(app: str, shown: int) -> None:
    """Say why a list read from an in-memory monitor may be empty, and how to fix it."""
    from pacificpy.background.backend import monitor_in_memory

    if not monitor_in_memory():
        return
    if shown:
        why = "only tasks of this command's own process show"
    else:
        why = (
            "this command runs in its own process, so it sees none of the tasks your app "
            "and its workers ran"
        )
    where = "your app module" if app == THIS_PROCESS else app
    Console(stderr=True, soft_wrap=False).print(
        Text(
            f"note: the task monitor of {app} is in memory: {why}. Call "
            f"configure_task_monitor(redis_url=...) in {where} so the app, its workers "
            "and this command share their task records.",
            style="dim",
        )
    )


def _blocks(console: Console, title: str, rows: list[tuple[str, Text, list[Text]]]) -> None:
    """A narrow terminal's list: per row, its id on a line of its own (never wrapped, so
    it can be copied whole), then its details indented."""
    console.print(Text(title, style="bold"))
    for ident, head, details in rows:
        line = Text(ident, style="bold")
        line.append("  ")
        line.append_text(head)
        console.print(line, no_wrap=True, overflow="ignore", crop=False)
        for detail in details:
            if detail.plain:
                console.print(Text("  ").append_text(detail))


@click.group("tasks")
@click.option(
    "-A",
    "--app",
    "app_module",
    envvar="PACIFICPY_APP",
    metavar="MODULE",
    help="Module that configures the backend and monitor (e.g. myapp or myapp:app). "
    "Env: PACIFICPY_APP.",
)
@click.pass_context
def command(ctx: click.Context, app_module: str | None) -> None:
    """Inspect background tasks: stats, recent tasks and the dead-letter queue."""
    if app_module:
        module_name, _ = split_spec(app_module)
        load_module(module_name)
    ctx.obj = {"app": app_module}


def _app(ctx: click.Context) -> str:
    """The ``-A`` module's name, or a usage error naming ``-A``/``PACIFICPY_APP``.

    Without a module this process has no backend and no monitor of the app's, so every
    answer would be an empty one. A process that configured its backend itself (a test
    calling the command in-process) needs none.
    """
    app_module: str | None = (ctx.obj or {}).get("app")
    if app_module:
        return split_spec(app_module)[0]
    if config.configured_backend() is not None:  # configured here, by the caller's own code
        return THIS_PROCESS
    raise click.UsageError(
        "no app given: name the module that configures your backend and task monitor "
        "with -A/--app MODULE (pacificpy tasks -A myapp list) or the PACIFICPY_APP "
        "environment variable",
        ctx,
    )


@command.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def stats_command(ctx: click.Context, as_json: bool) -> None:
    """Counts per status, queue lengths, and p50/p95/throughput per task name."""
    from pacificpy.background.decorators import get_backend
    from pacificpy.background.monitor import get_task_monitor

    app = _app(ctx)
    monitor = get_task_monitor()
    stats = monitor.stats()
    backend = get_backend()
    queues: dict[str, int | None] = {}
    for name in sorted(monitor.metrics().queues | {"default"}):
        try:
            queues[name] = backend.queue_length_sync(name)
        except Exception:
            queues[name] = None
    if as_json:
        _json({**stats, "backend": backend.kind, "queues": queues})
        return
    console = _console()
    counts = Table(title=_cell(f"Tasks ({backend.kind} backend)"), title_justify="left")
    for status in stats["counts"]:
        counts.add_column(_status(status), justify="right")
    counts.add_column("tasks/s", justify="right")
    counts.add_row(*(str(n) for n in stats["counts"].values()), f"{stats['throughput']:.2f}")
    console.print(counts)

    queue_table = Table(title="Queues", title_justify="left")
    queue_table.add_column("queue")
    queue_table.add_column("waiting", justify="right")
    for name, length in queues.items():
        queue_table.add_row(_cell(name), "?" if length is None else str(length))
    console.print(queue_table)

    names = Table(title=f"By task (throughput over {stats['window']:.0f} s)", title_justify="left")
    for col, justify in (("task", "left"), ("tasks", "right"), ("completed", "right"),
                         ("failed", "right"), ("p50", "right"), ("p95", "right"),
                         ("tasks/s", "right")):  # fmt: skip
        names.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for name, t in stats["tasks"].items():
        failed = t["counts"].get("failed", 0) + t["counts"].get("dead", 0)
        names.add_row(
            _cell(name),
            str(t["count"]),
            str(t["counts"].get("completed", 0)),
            str(failed),
            _duration(t["p50"]),
            _duration(t["p95"]),
            f"{t['throughput']:.2f}",
        )
    if not stats["tasks"]:
        names.add_row("(no tasks recorded)", "", "", "", "", "", "")
    console.print(names)
    _note_if_local_monitor(app, len(stats["tasks"]))


@command.command("list")
@click.option(
    "--status",
    type=click.Choice(
        ["queued", "running", "retrying", "completed", "failed", "dead", "abandoned"],
        case_sensitive=False,
    ),
    help="Only tasks in this state.",
)
@click.option("--name", help="Only tasks with this name.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_command(
    ctx: click.Context, status: str | None, name: str | None, limit: int, as_json: bool
) -> None:
    """Recent tasks, newest first."""
    from pacificpy.background.monitor import get_task_monitor

    app = _app(ctx)
    records = get_task_monitor().list(status=status, name=name, limit=limit)
    if as_json:
        _json([r.to_dict() for r in records])
        return
    console = _console()
    title = f"Tasks ({len(records)})"
    if console.width < COMPACT_WIDTH:
        _blocks(console, title, [
            (r.id, _status(r.status.value), [
                _cell(f"{r.name} · attempts {r.attempts} · {_when(r.updated_at)}"
                      + (f" · {_duration(r.duration)}" if r.duration is not None else "")),
                _cell(_cut(r.error), "red") if r.error else _cell(_cut(r.result_preview)),
            ])
            for r in records
        ])  # fmt: skip
    else:
        table = Table(title=title, title_justify="left")
        for col in ("id", "task", "status", "attempts", "updated", "duration", "result / error"):
            # The id never wraps (a wrapped id cannot be copied); the others give way.
            table.add_column(col, no_wrap=col in ("id", "status", "updated"), overflow="fold")
        for r in records:
            outcome = _cell(_cut(r.error), "red") if r.error else _cell(_cut(r.result_preview))
            table.add_row(
                _cell(r.id),
                _cell(r.name),
                _status(r.status.value),
                str(r.attempts),
                _when(r.updated_at),
                _duration(r.duration),
                outcome,
            )
        console.print(table)
    _note_if_local_monitor(app, len(records))


@command.group("dlq")
def dlq() -> None:
    """The configured backend's dead-letter queue."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def dlq_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Dead letters, newest first (arguments shown as redacted previews)."""
    from pacificpy.background.dead_letter import dead_letter_view
    from pacificpy.background.decorators import get_backend

    _app(ctx)
    letters = [dead_letter_view(letter) for letter in get_backend().dead_letters_sync(limit)]
    if as_json:
        _json(letters)
        return
    console = _console()
    title = f"Dead letters ({len(letters)})"
    errors = [f"{d['error_type']}: {d['error']}" if d["error_type"] else d["error"]
              for d in letters]  # fmt: skip
    if console.width < COMPACT_WIDTH:
        _blocks(console, title, [
            (d["id"], _cell(d["reason"]), [
                _cell(f"task {d['task_name'] or '?'} {d['task_id'] or ''}"),
                _cell(f"attempts {d['attempts']} · failed {_when(d['failed_at'])}"),
                _cell(f"arguments {_cut(d['args_preview'], 40) or '()'}"),
                _cell(_cut(error), "red"),
            ])
            for d, error in zip(letters, errors, strict=True)
        ])  # fmt: skip
        return
    table = Table(title=title, title_justify="left")
    for col in ("id", "task", "reason", "attempts", "failed", "arguments", "error"):
        table.add_column(col, no_wrap=col in ("id", "failed"), overflow="fold")
    for d, error in zip(letters, errors, strict=True):
        table.add_row(
            _cell(d["id"]),
            _cell(d["task_name"] or "?"),
            _cell(d["reason"]),
            str(d["attempts"]),
            _when(d["failed_at"]),
            _cell(_cut(d["args_preview"], 40)),
            _cell(_cut(error), "red"),
        )
    console.print(table)


@dlq.command("requeue")
@click.argument("letter_id")
@click.pass_context
def dlq_requeue(ctx: click.Context, letter_id: str) -> None:
    """Enqueue dead letter LETTER_ID again as a fresh first attempt (same task id).

    A letter that cannot be requeued (never verified, no longer decodes, or the backend
    refused the task) stays in the queue; the reason is printed and the exit status is 1.
    """
    from pacificpy.background.decorators import get_backend
    from pacificpy.errors import DeadLetterError, EnqueueError

    _app(ctx)
    try:
        task_id = get_backend().requeue_dead_letter_sync(letter_id)
    except KeyError:
        raise click.ClickException(f"no dead letter with id {letter_id!r}") from None
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from None
    except EnqueueError as exc:
        raise click.ClickException(f"not requeued, the dead letter is kept: {exc}") from None
    click.echo(f"requeued dead letter {letter_id} as task {task_id}")


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def dlq_purge(ctx: click.Context, yes: bool) -> None:
    """Delete every dead letter."""
    from pacificpy.background.decorators import get_backend

    _app(ctx)
    if not yes:
        click.confirm("Delete every dead letter?", abort=True)
    purged = get_backend().purge_dead_letters_sync()
    click.echo(f"purged {purged} dead letters")


@command.command("cancel")
@click.argument("task_id")
@click.option(
    "--terminate", is_flag=True, help="Also kill the process running it (Celery's prefork pool)."
)
@click.pass_context
def cancel_command(ctx: click.Context, task_id: str, terminate: bool) -> None:
    """Cancel task TASK_ID: it never starts, or is stopped where it runs.

    Exit status 1 when the task had already finished (nothing is changed then).
    """
    from pacificpy.background.decorators import get_backend

    app = _app(ctx)
    backend = get_backend()
    if backend.kind == "local" and app != THIS_PROCESS:
        raise click.ClickException(
            "the local executor runs tasks inside the app's own process, which this command "
            "cannot reach: cancel them there (await handle.cancel()), or from the dashboard"
        )
    if backend.cancel_sync(task_id, terminate=terminate):
        click.echo(f"cancelled task {task_id}")
        return
    raise click.ClickException(f"task {task_id} had already finished; nothing was changed")


@command.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def schedules_command(ctx: click.Context, as_json: bool) -> None:
    """Periodic tasks: expression, zone, last run and its status, next run."""
    from pacificpy.background.decorators import get_backend
    from pacificpy.background.schedules import schedule_views

    _app(ctx)
    views = schedule_views(get_backend())
    if as_json:
        _json([v.to_dict() for v in views])
        return
    console = _console()
    title = f"Schedules ({len(views)})"
    if console.width < COMPACT_WIDTH:
        _blocks(console, title, [
            (v.name, _status(v.last_status or ""), [
                _cell(f"{v.expression} ({v.zone}, missed: {v.missed})"),
                _cell(f"last run {_slot(v.last_run)} · next run {_slot(v.next_run)}"),
            ])
            for v in views
        ])  # fmt: skip
        return
    table = Table(title=title, title_justify="left")
    for col in ("task", "schedule", "zone", "missed", "last run", "status", "next run"):
        table.add_column(col, no_wrap=col in ("last run", "next run", "status"), overflow="fold")
    for v in views:
        table.add_row(
            _cell(v.name),
            _cell(v.expression),
            _cell(v.zone),
            _cell(v.missed),
            _cell(_slot(v.last_run)),
            _status(v.last_status or ""),
            _cell(_slot(v.next_run)),
        )
    console.print(table)


def _slot(when: dt.datetime | None) -> str:
    return when.isoformat(sep=" ") if when is not None else "never"


@command.command("workers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def workers_command(ctx: click.Context, as_json: bool) -> None:
    """Workers in the registry: live, or lost (not seen for 3 heartbeats) with the tasks
    they were running."""
    from pacificpy.background.decorators import get_backend
    from pacificpy.background.workers import workers_view

    _app(ctx)
    backend = get_backend()
    view = workers_view(backend)
    if not view["kept"]:
        raise click.ClickException(f"the {backend.kind} backend keeps no worker registry")
    now, workers = view["now"], view["workers"]
    if as_json:
        _json(workers)
        return
    console = _console()
    title = f"Workers ({backend.kind} backend): {len(workers)}"
    table = Table(title=title, title_justify="left")
    for col in ("id", "state", "host", "pid", "queues", "running", "started", "last seen"):
        table.add_column(col, no_wrap=col in ("id", "state", "started"), overflow="fold")
    for w in workers:
        running = ", ".join(f"{r['name']} {r['id']}" for r in w["running"])
        table.add_row(
            _cell(w["id"]),
            _cell(w["state"], "red" if w["state"] == "lost" else "green"),
            _cell(w["host"]),
            str(w["pid"]),
            _cell(", ".join(w["queues"])),
            _cell(running or "-", "red" if w["state"] == "lost" and running else ""),
            _when(w["started_at"]),
            f"{max(0.0, now - w['last_seen']):.1f} s ago",
        )
    if not workers:
        table.add_row("(no workers registered)", "", "", "", "", "", "", "")
    console.print(table)
