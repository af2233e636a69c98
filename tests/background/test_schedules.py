"""Periodic tasks (SPEC 10.3) in one process: the decorator's checks, the slots (DST on a
controlled clock), the missed policies, the slot record of the in-memory state, the slot
seen by ``current_task()``, and the CLI and dashboard listings.

The exactly-once figures across real processes are in
``tests/reliability/test_schedules_processes.py``.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from click.testing import CliRunner

from pacificpy import PacificPy
from pacificpy.background import background, current_task, schedules
from pacificpy.background import scheduler as scheduler_module
from pacificpy.background.backends.state import MemoryTaskState
from pacificpy.background.decorators import _idempotent_id, configure_background_tasks
from pacificpy.background.local import LocalExecutor
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.scheduler import Scheduler, start_scheduler, stop_scheduler
from pacificpy.background.schedules import MAX_LATE, parse_schedule, plan_slots, slot_key
from pacificpy.cli import cli
from pacificpy.errors import ConfigurationError
from pacificpy.testing import CapturingBackend, TestClient
from tests.support.wait import wait_for

NY = ZoneInfo("America/New_York")


@pytest.fixture(autouse=True)
def _own_schedules() -> Iterator[None]:
    """Only this test's schedules are declared while it runs, and none outlives it (a
    schedule left declared would run in every later test that starts an app)."""
    saved = dict(schedules._schedules)
    schedules._schedules.clear()
    yield
    schedules._schedules.clear()
    schedules._schedules.update(saved)


def _ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, tz: Any = NY) -> float:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp()


# -- decoration-time checks ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"schedule": "61 * * * *"}, "invalid cron expression"),
        ({"schedule": "* * * *"}, "5 fields"),
        ({"schedule": "* * * * * * *"}, "5 fields"),
        ({"schedule": "every minute"}, "5 fields"),
        ({"schedule": dt.timedelta(0)}, "must be positive"),
        ({"schedule": dt.timedelta(seconds=-5)}, "must be positive"),
        ({"schedule": 60}, "cron expression (str) or a datetime.timedelta"),
        ({"schedule": "* * * * *", "schedule_tz": "Mars/Olympus"}, "not a known time zone"),
        ({"schedule": "* * * * *", "schedule_tz": "../etc/passwd"}, "not a known time zone"),
        ({"schedule": "* * * * *", "missed": "all"}, "missed must be 'skip' or 'once'"),
    ],
)
def test_a_bad_schedule_is_refused_at_decoration(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as caught:

        @background(name="tests.sched.bad", **options)
        def job() -> None: ...

    assert says in str(caught.value)
    assert schedules.get_schedule("tests.sched.bad") is None


@pytest.mark.parametrize("signature", ["positional", "keyword_only"])
def test_a_scheduled_task_with_required_arguments_is_refused(signature: str) -> None:
    with pytest.raises(ConfigurationError, match="requires user_id"):
        if signature == "positional":

            @background(name="tests.sched.args", schedule="*/5 * * * *")
            def job(user_id: int) -> None: ...

        else:

            @background(name="tests.sched.args", schedule="*/5 * * * *")
            def job2(*, user_id: int) -> None: ...

    assert schedules.get_schedule("tests.sched.args") is None


def test_defaults_and_varargs_are_fine_and_the_schedule_is_recorded() -> None:
    @background(name="tests.sched.ok", schedule="0 9 * * 1-5", schedule_tz="Europe/Paris")
    def job(limit: int = 10, *args: Any, **kwargs: Any) -> None: ...

    found = schedules.get_schedule("tests.sched.ok")
    assert found is not None
    assert (found.cron, found.tz, found.missed) == ("0 9 * * 1-5", "Europe/Paris", "skip")
    assert job(limit=1) is None  # still a plain function


# -- slots -----------------------------------------------------------------------------------
def test_interval_slots_are_aligned_on_the_epoch() -> None:
    every5 = parse_schedule(dt.timedelta(seconds=5))
    assert every5.slot_at_or_before(1_000_003.2) == 1_000_000
    assert every5.slot_at_or_before(1_000_005.0) == 1_000_005
    assert every5.slot_after(1_000_005.0) == 1_000_010
    assert every5.slot_before(1_000_005) == 1_000_000


def test_six_fields_put_seconds_first() -> None:
    at30 = parse_schedule("30 * * * * *")
    now = _ts(2026, 1, 5, 12, 0, 10, tz=dt.timezone.utc)
    assert at30.slot_after(now) == _ts(2026, 1, 5, 12, 0, 30, tz=dt.timezone.utc)
    assert at30.slot_at_or_before(now) == _ts(2026, 1, 5, 11, 59, 30, tz=dt.timezone.utc)


def test_slots_seen_from_inside_the_repeated_hour() -> None:
    """cronsim walking back from 01:15 EST (the second 01:xx of the fall-back day) steps over
    01:30 EDT of that day; the slot before 01:15 EST is still 01:30 EDT, 45 minutes ago."""
    daily = parse_schedule("30 1 * * *", "America/New_York")
    inside = _ts(2026, 11, 1, 6, 15, tz=dt.timezone.utc)  # 01:15 EST
    assert daily.slot_at_or_before(inside) == _ts(2026, 11, 1, 5, 30, tz=dt.timezone.utc)
    assert daily.slot_after(inside) == _ts(2026, 11, 2, 6, 30, tz=dt.timezone.utc)
    hourly = parse_schedule("0 * * * *", "America/New_York")
    second_one = _ts(2026, 11, 1, 6, 0, tz=dt.timezone.utc)  # 01:00 EST
    assert hourly.slot_before(second_one) == _ts(2026, 11, 1, 5, 0, tz=dt.timezone.utc)
    assert hourly.slot_at_or_before(second_one + 1) == second_one


def _drive(scheduler: Scheduler, start: float, end: float) -> None:
    """Run the scheduler's own loop on a controlled clock: tick, then jump to its wake-up."""
    now = start
    while now < end:
        scheduler.tick(now)
        now += scheduler.next_wake(now)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Spring forward (02:00 -> 03:00): the 02:30 that does not exist runs once, at 03:00;
        # the day has 23 hours, so 23 hourly runs.
        ((2026, 3, 8), {"daily-0230": ["03:00-04:00"], "daily-0130": ["01:30-05:00"],
                        "hourly": 23}),
        # Fall back (02:00 -> 01:00): 01:30 happens twice on the clock and runs once; the day
        # has 25 hours, so 25 hourly runs (01:00 EDT and 01:00 EST are an hour apart).
        ((2026, 11, 1), {"daily-0230": ["02:30-05:00"], "daily-0130": ["01:30-04:00"],
                         "hourly": 25}),
    ],
)  # fmt: skip
def test_dst_change_days_fire_once_per_wall_clock_slot(
    day: tuple[int, int, int], expected: dict[str, Any]
) -> None:
    backend = CapturingBackend()
    configure_background_tasks(backend)
    for name, expr in (("daily-0230", "30 2 * * *"), ("daily-0130", "30 1 * * *"),
                       ("hourly", "0 * * * *")):  # fmt: skip
        background(name=name, schedule=expr, schedule_tz="America/New_York")(lambda: None)
    start = _ts(*day) - 60  # one minute before local midnight
    scheduler = Scheduler(backend, clock=lambda: start)
    _drive(scheduler, start, _ts(*day) + 86_400 + 7_200)  # past the next local midnight

    runs: dict[str, list[dt.datetime]] = {}
    for task in backend.enqueued:
        slot = dt.datetime.fromisoformat(task.options["idempotency_key"].split("@", 1)[1])
        local = slot.astimezone(NY)
        if local.date() == dt.date(*day):
            runs.setdefault(task.name, []).append(local)
    wall = {n: [t.strftime("%H:%M%z")[:-2] + ":00" for t in ts] for n, ts in runs.items()}
    assert wall["daily-0230"] == expected["daily-0230"]
    assert wall["daily-0130"] == expected["daily-0130"]
    assert len(runs["hourly"]) == expected["hourly"]
    keys = Counter(t.options["idempotency_key"] for t in backend.enqueued)
    assert max(keys.values()) == 1  # no slot twice


# -- the missed policies and the race of two schedulers ----------------------------------------
def test_plan_skip_and_once_after_downtime() -> None:
    every = parse_schedule(dt.timedelta(seconds=10))
    once = parse_schedule(dt.timedelta(seconds=10), missed="once")
    # Live, on time: the slot due now, nothing else.
    assert plan_slots(every, 1005, started=900, last=990) == [1000]
    assert plan_slots(once, 1005, started=900, last=990) == [1000]
    # Already enqueued by another process.
    assert plan_slots(every, 1005, started=900, last=1000) == []
    # Restarted at 1005 after slots 1000, 990, 980 passed unseen (last enqueued: 970).
    assert plan_slots(every, 1005, started=1003, last=970) == []
    assert plan_slots(once, 1005, started=1003, last=970) == [1000]
    # ... then the next slot is live: skip runs it alone; once ran its catch-up already.
    assert plan_slots(every, 1012, started=1003, last=970) == [1010]
    assert plan_slots(once, 1012, started=1003, last=1000) == [1010]
    # A live process that woke late, past a slot: both slots fell while it ran, both run.
    assert plan_slots(once, 1012, started=900, last=990) == [1000, 1010]
    assert plan_slots(every, 1012, started=900, last=990) == [1000, 1010]
    # ... unless it woke more than MAX_LATE after them: then they were missed.
    late = 1000 + MAX_LATE + 2  # slots 1000 .. 1060 passed; 1000 is too old now
    assert plan_slots(every, late, started=900, last=990)[0] == 1010
    assert plan_slots(once, late, started=900, last=990)[:2] == [1000, 1010]
    # A schedule that never ran has missed nothing.
    assert plan_slots(once, 1005, started=1003, last=None) == []
    assert plan_slots(once, 1012, started=1003, last=None) == [1010]


class _StaleReads(MemoryTaskState):
    """Every scheduler reads the last slot as it was before the round began: the race of
    processes that all look before any of them records the slot."""

    stale: float | None = None

    def last_schedule_slot(self, name: str) -> float | None:
        return self.stale


class _OwnStateBackend(CapturingBackend):
    """A capturing backend over the state given."""

    def __init__(self, state: MemoryTaskState) -> None:
        super().__init__()
        self._own = state

    @property
    def state(self) -> MemoryTaskState:
        return self._own


def _capture_over(state: MemoryTaskState, name: str, seconds: float) -> _OwnStateBackend:
    """Configure a capturing backend over ``state``, and a task every ``seconds``."""
    backend = _OwnStateBackend(state)
    configure_background_tasks(backend)
    background(name=name, schedule=dt.timedelta(seconds=seconds))(lambda: None)
    return backend


def test_two_schedulers_on_one_state_enqueue_each_slot_once() -> None:
    stale = _StaleReads()
    backend = _capture_over(stale, "tests.sched.two", 1)
    a = Scheduler(backend, clock=lambda: 1000.0)
    b = Scheduler(backend, clock=lambda: 1000.0)
    sent = []
    for step in range(20):  # both look at each slot before either records it
        stale.stale = 1000.0 + step - 1 if step else None
        now = 1000.0 + step + 0.01
        first, second = (a, b) if step % 2 else (b, a)
        sent += first.tick(now) + second.tick(now + 0.01)
    # The slot record let one scheduler through per slot (the other enqueued nothing) ...
    assert Counter(sent) == Counter(("tests.sched.two", 1000.0 + s) for s in range(20))
    # ... and the backend got each slot once.
    slots = Counter(t.options["idempotency_key"] for t in backend.enqueued)
    assert len(slots) == 20 and set(slots.values()) == {1}


class _CountedReads(MemoryTaskState):
    reads = 0

    def last_schedule_slot(self, name: str) -> float | None:
        self.reads += 1
        return super().last_schedule_slot(name)


def test_a_slot_decided_here_is_not_read_again() -> None:
    counted = _CountedReads()
    backend = _capture_over(counted, "tests.sched.reads", 10)
    scheduler = Scheduler(backend, clock=lambda: 999.0)
    for now in (1000.5, 1003, 1009.9):  # woken for other schedules within one slot
        scheduler.tick(now)
    assert counted.reads == 1
    scheduler.tick(1010.1)
    assert counted.reads == 2
    assert len(backend.enqueued) == 2


def test_a_process_starting_just_after_a_slot_leaves_it_to_the_live_one() -> None:
    backend = CapturingBackend()
    configure_background_tasks(backend)
    background(name="tests.sched.late", schedule=dt.timedelta(seconds=10))(lambda: None)
    live = Scheduler(backend, clock=lambda: 900.0)
    live.tick(995)  # before: it ran slot 990
    fresh = Scheduler(backend, clock=lambda: 1000.5)  # started just after slot 1000
    assert fresh.tick(1000.5) == []  # skip: slot 1000 fell before it started
    assert live.tick(1000.7) == [("tests.sched.late", 1000.0)]


def test_memory_state_advances_a_slot_for_one_caller() -> None:
    state = MemoryTaskState()
    barrier = threading.Barrier(8)
    won: list[bool] = []

    def race() -> None:
        barrier.wait()
        won.append(state.advance_schedule_slot("job", 100.0, None))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 7 + [True]
    assert state.last_schedule_slot("job") == 100.0
    assert state.advance_schedule_slot("job", 90.0, 100.0) is False  # never backwards
    assert state.advance_schedule_slot("job", 110.0, None) is False  # not what it holds
    assert state.advance_schedule_slot("job", 110.0, 100.0) is True
    assert state.last_schedule_slot("other") is None


def test_an_enqueue_failure_is_tried_again_then_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = CapturingBackend()
    configure_background_tasks(backend)
    for name in ("tests.sched.a", "tests.sched.b", "tests.sched.c"):
        background(name=name, schedule=dt.timedelta(seconds=10))(lambda: None)
    calls = Counter[str]()

    def failing(task: Any, times: int) -> None:
        send = task.apply_async

        def apply_async(**options: Any) -> Any:
            calls[task.name] += 1
            if calls[task.name] <= times:
                raise RuntimeError("broker down")
            return send(**options)

        task.apply_async = apply_async  # this instance only

    failing(schedules._schedules["tests.sched.a"][0], times=99)  # never gets through
    failing(schedules._schedules["tests.sched.b"][0], times=1)  # the second try does
    sent = Scheduler(backend, clock=lambda: 999.0).tick(1001)
    assert sent == [("tests.sched.b", 1000.0), ("tests.sched.c", 1000.0)]
    assert calls == {"tests.sched.a": 3, "tests.sched.b": 2}
    assert "could not enqueue tests.sched.a for 1970-01-01T00:16:40+00:00; this slot is lost" in (
        caplog.text
    )
    assert [t.name for t in backend.enqueued] == ["tests.sched.b", "tests.sched.c"]


# -- running for real: current_task().scheduled_for --------------------------------------------
def test_a_scheduled_run_tells_its_slot(executor: LocalExecutor) -> None:
    seen: list[tuple[Any, Any]] = []

    @background(name="tests.sched.real", schedule=dt.timedelta(seconds=0.2))
    def job() -> None:
        ctx = current_task()
        assert ctx is not None
        seen.append((ctx.scheduled_for, ctx.idempotency_key))

    @background(name="tests.sched.plain")
    def plain() -> None:
        ctx = current_task()
        assert ctx is not None
        seen.append((ctx.scheduled_for, "plain"))

    scheduler = start_scheduler(executor)
    assert scheduler is not None
    try:
        wait_for(lambda: len(seen) >= 3, 30, what="three scheduled runs")
    finally:
        stop_scheduler()
    # A plain task, even one whose key looks like a slot's, has no slot.
    plain.apply_async(idempotency_key="tests.sched.plain@2026-01-01T00:00:00+00:00")
    wait_for(lambda: seen[-1][1] == "plain", 30, what="the plain task")
    assert seen[-1][0] is None
    for slot, key in seen[:3]:
        assert slot is not None and slot.tzinfo is not None
        assert key == slot_key("tests.sched.real", slot.timestamp())
        assert abs(slot.timestamp() * 5 - round(slot.timestamp() * 5)) < 1e-6  # 0.2 s grid


def test_a_scheduled_run_retries_and_dead_letters_like_any_task(executor: LocalExecutor) -> None:
    attempts: list[tuple[Any, int]] = []

    @background(
        name="tests.sched.flaky",
        schedule=dt.timedelta(seconds=0.3),
        retries=1,
        retry_backoff=0.01,
        retry_jitter=False,
    )
    def flaky() -> None:
        ctx = current_task()
        assert ctx is not None
        attempts.append((ctx.scheduled_for, ctx.attempt))
        raise RuntimeError("boom")

    start_scheduler(executor)
    try:
        wait_for(lambda: len(executor.dead_letters_sync()) >= 2, 30, what="two dead slots")
    finally:
        stop_scheduler()
    letter = executor.dead_letters_sync()[-1]  # the oldest: its slot ran both attempts
    assert letter.task_name == "tests.sched.flaky" and letter.attempts == 2
    (slot,) = {
        s
        for s, _ in attempts
        if _idempotent_id("tests.sched.flaky", slot_key("tests.sched.flaky", s.timestamp()))
        == letter.task_id
    }  # the letter's task id is the slot's
    assert [a for s, a in attempts if s == slot] == [1, 2]  # both attempts tell the slot
    record = get_task_monitor().get(letter.task_id)
    assert record is not None and record.status.value == "failed" and record.attempts == 2
    firsts = Counter(s for s, a in attempts if a == 1)
    assert set(firsts.values()) == {1}  # a dead slot is not enqueued again


def test_the_app_starts_and_stops_the_scheduler(executor: LocalExecutor) -> None:
    background(name="tests.sched.hourly", schedule=dt.timedelta(hours=1))(lambda: None)
    with TestClient(PacificPy()):
        running = scheduler_module._scheduler
        assert running is not None and running._thread is not None
        assert running._thread.is_alive() and running.backend is executor
        thread = running._thread
    assert scheduler_module._scheduler is None and not thread.is_alive()


def test_no_scheduler_without_schedules(executor: LocalExecutor) -> None:
    assert start_scheduler(executor) is None


# -- the listings ------------------------------------------------------------------------------
def _ran_one(executor: LocalExecutor) -> None:
    @background(name="tests.sched.listed", schedule="*/5 * * * *", schedule_tz="Europe/Paris")
    def job() -> None: ...

    slot = _ts(2026, 6, 1, 12, 0, tz=dt.timezone.utc)
    Scheduler(executor, clock=lambda: slot - 30).tick(slot + 1)
    task_id = _idempotent_id("tests.sched.listed", slot_key("tests.sched.listed", slot))
    executor.get_handle(task_id).result_sync(timeout=30)


def test_cli_lists_schedules(executor: LocalExecutor) -> None:
    _ran_one(executor)
    result = CliRunner().invoke(cli, ["tasks", "schedules", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = orjson.loads(result.output)
    assert row["name"] == "tests.sched.listed"
    assert (row["expression"], row["zone"], row["missed"]) == (
        "*/5 * * * *",
        "Europe/Paris",
        "skip",
    )
    assert row["last_run"] == "2026-06-01T14:00:00+02:00"  # in the schedule's zone
    assert row["last_status"] == "completed"
    next_run = dt.datetime.fromisoformat(row["next_run"])
    assert next_run > dt.datetime.now(dt.timezone.utc) and next_run.minute % 5 == 0
    for width in ("200", "80"):  # a table, or a block per schedule on a narrow terminal
        shown = CliRunner(env={"COLUMNS": width}).invoke(
            cli, ["tasks", "schedules"], catch_exceptions=False
        )
        assert "tests.sched.listed" in shown.output, shown.output
        assert "completed" in shown.output and "*/5 * * * *" in shown.output, shown.output


def test_dashboard_lists_schedules(executor: LocalExecutor) -> None:
    _ran_one(executor)
    app = PacificPy()
    app.include_task_dashboard(token="t" * 20)
    with TestClient(app) as client:
        answer = client.get(
            "/_tasks/api/schedules", headers={"Authorization": "Bearer " + "t" * 20}
        )
        assert client.get("/_tasks/api/schedules").status_code == 401
    assert answer.status_code == 200
    (row,) = answer.json()["schedules"]
    assert row["name"] == "tests.sched.listed" and row["last_status"] == "completed"
