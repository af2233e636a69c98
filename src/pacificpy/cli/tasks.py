"""``pacificpy tasks``: inspect tasks and the dead-letter queue from the command line.

``-A/--app MODULE`` (or ``PACIFICPY_APP``) names the module that configures the backend
and the monitor, as ``celery -A`` does; it is imported from the current directory::

    pacificpy tasks -A myapp stats
    pacificpy tasks -A myapp list --status failed --limit 20
    pacificpy tasks -A myapp dlq list
    pacificpy tasks -A myapp dlq requeue LETTER_ID
    pacificpy tasks -A myapp dlq purge --yes

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


def _note_if_local_monitor(console: Console) -> None:
    from pacificpy.background.monitor import InMemoryMonitorStore, get_task_monitor

    if isinstance(get_task_monitor().store, InMemoryMonitorStore):
        Console(stderr=True).print(
            "[dim]note: the monitor is in memory, so only tasks of this command's own process "
            "show; configure_task_monitor(redis_url=...) shares records between processes[/dim]"
        )


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


@command.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def stats_command(as_json: bool) -> None:
    """Counts per status, queue lengths, and p50/p95/throughput per task name."""
    from pacificpy.background.decorators import get_backend
    from pacificpy.background.monitor import get_task_monitor

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
    _note_if_local_monitor(console)
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
def list_command(status: str | None, name: str | None, limit: int, as_json: bool) -> None:
    """Recent tasks, newest first."""
    from pacificpy.background.monitor import get_task_monitor

    records = get_task_monitor().list(status=status, name=name, limit=limit)
    if as_json:
        _json([r.to_dict() for r in records])
        return
    console = _console()
    _note_if_local_monitor(console)
    table = Table(title=f"Tasks ({len(records)})", title_justify="left")
    for col in ("id", "task", "status", "attempts", "updated", "duration", "result / error"):
        table.add_column(col, no_wrap=col in ("status", "updated"), overflow="fold")
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


@command.group("dlq")
def dlq() -> None:
    """The configured backend's dead-letter queue."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def dlq_list(limit: int, as_json: bool) -> None:
    """Dead letters, newest first (arguments shown as redacted previews)."""
    from pacificpy.background.dashboard import dead_letter_view
    from pacificpy.background.decorators import get_backend

    letters = [dead_letter_view(letter) for letter in get_backend().dead_letters_sync(limit)]
    if as_json:
        _json(letters)
        return
    table = Table(title=f"Dead letters ({len(letters)})", title_justify="left")
    for col in ("id", "task", "reason", "attempts", "failed", "arguments", "error"):
        table.add_column(col, no_wrap=col == "failed", overflow="fold")
    for d in letters:
        error = f"{d['error_type']}: {d['error']}" if d["error_type"] else d["error"]
        table.add_row(
            _cell(d["id"]),
            _cell(d["task_name"] or "?"),
            _cell(d["reason"]),
            str(d["attempts"]),
            _when(d["failed_at"]),
            _cell(_cut(d["args_preview"], 40)),
            _cell(_cut(error), "red"),
        )
    _console().print(table)


@dlq.command("requeue")
@click.argument("letter_id")
def dlq_requeue(letter_id: str) -> None:
    """Enqueue dead letter LETTER_ID again as a fresh first attempt (same task id).

    A letter that cannot be requeued (never verified, no longer decodes, or the backend
    refused the task) stays in the queue; the reason is printed and the exit status is 1.
    """
    from pacificpy.background.decorators import get_backend
    from pacificpy.errors import DeadLetterError, EnqueueError

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
def dlq_purge(yes: bool) -> None:
    """Delete every dead letter."""
    from pacificpy.background.decorators import get_backend

    if not yes:
        click.confirm("Delete every dead letter?", abort=True)
    purged = get_backend().purge_dead_letters_sync()
    click.echo(f"purged {purged} dead letters")
