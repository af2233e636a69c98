"""Flow control (SPEC §10.5): options checked at the call site, the in-memory and Redis
leases and windows, throttled starts counted, and priorities on the wire."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import prometheus_client
import pytest

from pacificpy.background import _codec
from pacificpy.background._lane import TOKEN, PriorityLane
from pacificpy.background.backends.postgres import PostgresTaskState
from pacificpy.background.backends.redis.state import RedisTaskState
from pacificpy.background.backends.state import MemoryTaskState, TaskState
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.flow import Rate, limits, parse_rate
from pacificpy.background.local import LocalExecutor, get_local_executor
from pacificpy.background.metrics import make_registry
from pacificpy.background.monitor import get_task_monitor
from pacificpy.background.task import Message, TaskEnvelope
from pacificpy.errors import ConfigurationError, MessageRejected
from pacificpy.testing import capture_tasks, eager_tasks
from tests.support.wait import wait_for

_hits: list[str] = []


@background(name="flow-unit-limited", concurrency=1)
def limited(tag: str) -> str:
    _hits.append(tag)
    time.sleep(0.2)
    return tag


@background(name="flow-unit-prioritised", priority=7)
def prioritised() -> None:
    pass


# -- options are checked where they are written ------------------------------------------------
@pytest.mark.parametrize(
    ("text", "rate"),
    [("5/s", Rate(5, 1.0)), ("100/m", Rate(100, 60.0)), (" 7 / h ", Rate(7, 3600.0))],
)
def test_rate_limit_parses(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["5/d", "0/s", "-1/s", "5", "five/s", "5/ms", 5])
def test_bad_rate_limit_is_refused_at_decoration(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        background(rate_limit=bad)(lambda: None)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_concurrency_is_refused_at_decoration(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        background(concurrency=bad)(lambda: None)


@pytest.mark.parametrize("bad", [-1, 10, 2.0, True, "9"])
def test_bad_priority_is_refused_at_decoration_and_call_site(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="priority"):
        background(priority=bad)(lambda: None)
    with eager_tasks() as backend, pytest.raises(ConfigurationError, match="priority"):
        prioritised.apply_async(priority=bad)
    assert backend.monitor.list() == []  # nothing was enqueued


def test_a_task_without_limits_has_none() -> None:
    assert limits(None, None) is None
    assert prioritised.spec.flow is None
    assert limited.spec.flow is not None and limited.spec.flow.concurrency == 1


# -- priorities travel with the message --------------------------------------------------------
def test_priority_is_the_tasks_unless_the_call_gives_one() -> None:
    with capture_tasks() as backend:
        prioritised.delay()
        prioritised.apply_async(priority=2)
        prioritised.apply_async(priority=0)
    sent = [_codec.decode(c.message.data).priority for c in backend.enqueued]
    assert sent == [7, 2, 0]


def test_priority_is_encoded_only_when_set_and_checked_when_decoded() -> None:
    plain = TaskEnvelope("a" * 32, "t")
    assert b'"pr"' not in _codec.encode(plain)
    high = TaskEnvelope("a" * 32, "t", priority=9)
    assert _codec.decode(_codec.encode(high)).priority == 9
    forged = _codec.encode(high).replace(b'"pr":9', b'"pr":42')
    with pytest.raises(MessageRejected, match="priority"):
        _codec.decode(forged)


def test_lane_runs_higher_priority_first_then_plain_in_order() -> None:
    lane = PriorityLane()

    def msg(label: str, priority: int = 0) -> Message:
        return Message(TaskEnvelope(label, "t", priority=priority), b"")

    low, mid, high, plain1, plain2 = (
        msg("low", 1),
        msg("mid", 5),
        msg("high", 9),
        msg("p1"),
        msg("p2"),
    )
    for m in (low, high, mid):
        lane.put(m)
    # the line holds: p1, token, token, token, p2
    ran = [
        lane.pick(plain1),
        lane.pick(TOKEN),
        lane.pick(TOKEN),
        lane.pick(TOKEN),
        lane.pick(plain2),
    ]
    assert [m.task_id for m in ran] == ["high", "mid", "low", "p1", "p2"]
    assert len(lane) == 0


# -- leases and windows in memory ----------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_lease_expires_unless_renewed() -> None:
    clock = Clock()
    state = MemoryTaskState(clock=clock)
    assert state.admit("t", "a", 1, None, 10.0) is None
    assert state.admit("t", "b", 1, None, 10.0) == ("concurrency", 0.0)
    clock.now += 8
    state.renew_slots([("t", "a")], 10.0)
    clock.now += 8  # 16 s after the start, 8 after the renewal: still held
    assert state.admit("t", "b", 1, None, 10.0) == ("concurrency", 0.0)
    clock.now += 3  # not renewed for 11 s (its worker died): gone
    assert state.admit("t", "b", 1, None, 10.0) is None
    state.release_slot("t", "b")
    assert state.admit("t", "c", 1, None, 10.0) is None


def test_memory_rate_window_slides() -> None:
    clock = Clock()
    state = MemoryTaskState(clock=clock)
    for i in range(3):
        assert state.admit("t", f"h{i}", None, Rate(3, 1.0), 10.0) is None
        clock.now += 0.1
    held = state.admit("t", "h3", None, Rate(3, 1.0), 10.0)
    assert held is not None and held[0] == "rate_limit"
    assert held[1] == pytest.approx(0.7)  # the first start leaves the window then
    clock.now += 0.7
    assert state.admit("t", "h3", None, Rate(3, 1.0), 10.0) is None


def test_memory_admission_takes_both_limits_or_neither() -> None:
    clock = Clock()
    state = MemoryTaskState(clock=clock)
    assert state.admit("t", "a", 2, Rate(1, 60.0), 10.0) is None
    assert state.admit("t", "b", 2, Rate(1, 60.0), 10.0) == ("rate_limit", 60.0)
    state.release_slot("t", "a")
    assert state.admit("t", "c", 1, None, 10.0) is None  # b took no slot


# -- the same in Redis ------------------------------------------------------------------------
def test_redis_lease_and_window(redis_url: str) -> None:
    state = RedisTaskState(redis_url, prefix=f"flow-{uuid.uuid4().hex[:8]}")
    try:
        assert state.admit("t", "a", 1, Rate(2, 60.0), 0.3) is None
        assert state.admit("t", "b", 1, Rate(2, 60.0), 0.3) == ("concurrency", 0.0)
        state.renew_slots([("t", "a")], 0.3)
        time.sleep(0.2)
        assert state.admit("t", "b", 1, Rate(2, 60.0), 0.3) == ("concurrency", 0.0)
        time.sleep(0.35)  # not renewed: the lease expired
        assert state.admit("t", "b", 1, Rate(2, 60.0), 0.3) is None
        state.release_slot("t", "b")
        kind, wait = state.admit("t", "c", 1, Rate(2, 60.0), 0.3) or ("", 0.0)
        assert kind == "rate_limit" and 59.0 < wait <= 60.0
    finally:
        state.close()


# -- the same in PostgreSQL, and racing "processes" on every shared state --------------------
def test_postgres_lease_and_window(postgres_url: str) -> None:
    state = PostgresTaskState(postgres_url)
    try:
        assert state.admit("t", "a", 1, Rate(2, 60.0), 2.0) is None
        assert state.admit("t", "b", 1, Rate(2, 60.0), 2.0) == ("concurrency", 0.0)
        time.sleep(1.2)
        state.renew_slots([("t", "a")], 2.0)
        time.sleep(1.2)  # 2.4 s after the start, 1.2 after the renewal: still held
        assert state.admit("t", "b", 1, Rate(2, 60.0), 2.0) == ("concurrency", 0.0)
        wait_for(lambda: state.admit("t", "b", 1, Rate(2, 60.0), 2.0) is None, 10, what="expiry")
        state.renew_slots([("t", "gone")], 2.0)  # a lease that is not held stays gone
        state.release_slot("t", "b")
        kind, wait = state.admit("t", "c", 1, Rate(2, 60.0), 2.0) or ("", 0.0)
        assert kind == "rate_limit" and 55.0 < wait <= 60.0
        assert state.admit("t", "c", 1, None, 2.0) is None  # the refusal took no slot
        assert state.admit("u", "x", 1, None, 0.5) is None
        time.sleep(1.0)  # the lease runs out, unrenewed (its worker died)
        state.renew_slots([("u", "x")], 60.0)  # too late: it stays gone
        assert state.admit("u", "y", 1, None, 60.0) is None
    finally:
        state.close()


RACERS = 8


@pytest.fixture(params=["redis", "postgres"])
def make_state(request: pytest.FixtureRequest) -> Iterator[Callable[[], TaskState]]:
    """Separate states over one store (each its own connections): "processes"."""
    made: list[TaskState] = []
    if request.param == "redis":
        url, prefix = request.getfixturevalue("redis_url"), f"flow-{uuid.uuid4().hex[:8]}"

        def make() -> TaskState:
            made.append(RedisTaskState(url, prefix=prefix))
            return made[-1]
    else:
        pg_url = request.getfixturevalue("postgres_url")

        def make() -> TaskState:
            made.append(PostgresTaskState(pg_url))
            return made[-1]

    yield make
    for state in made:
        state.close()


def _race(states: list[TaskState], admit: Callable[[TaskState, int], Any]) -> list[Any]:
    barrier = threading.Barrier(len(states))
    answers: list[Any] = [None] * len(states)

    def run(i: int) -> None:
        barrier.wait()
        answers[i] = admit(states[i], i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(states))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def test_racing_admissions_take_exactly_the_limits(make_state: Callable[[], TaskState]) -> None:
    states = [make_state() for _ in range(RACERS)]
    slots = _race(states, lambda s, i: s.admit("slots", f"h{i}", 3, None, 60.0))
    assert sorted(a is None for a in slots) == [False] * (RACERS - 3) + [True] * 3
    starts = _race(states, lambda s, i: s.admit("starts", f"h{i}", None, Rate(5, 60.0), 60.0))
    assert sorted(a is None for a in starts) == [False] * (RACERS - 5) + [True] * 5
    assert {a[0] for a in slots if a} == {"concurrency"}
    assert {a[0] for a in starts if a} == {"rate_limit"}


# -- on the local executor -------------------------------------------------------------------
def test_throttled_starts_are_deferred_counted_and_spend_no_attempt() -> None:
    executor: LocalExecutor = get_local_executor(4)
    configure_background_tasks(executor)
    _hits.clear()
    try:
        handles = [limited.delay(str(i)) for i in range(3)]
        assert sorted(h.result_sync(30) for h in handles) == ["0", "1", "2"]
    finally:
        executor.shutdown_sync(timeout=5)
    monitor = get_task_monitor()
    throttled = monitor.metrics().totals.get(("flow-unit-limited", "throttled"), 0)
    assert throttled >= 2  # two of the three waited at least once
    assert {r.attempts for r in monitor.list(name="flow-unit-limited")} == {1}
    text = prometheus_client.generate_latest(make_registry(queue_lengths=False)).decode()
    assert f'pacificpy_tasks_throttled_total{{name="flow-unit-limited"}} {throttled}.0' in text
    assert 'status="throttled"' not in text


def test_a_deferred_start_holds_no_worker() -> None:
    """Two worker threads: one runs the limited task, the other is not held by the second
    start of it (deferred), so a third task runs meanwhile."""
    executor = get_local_executor(2)
    configure_background_tasks(executor)
    go, ran = threading.Event(), threading.Event()

    @background(name="flow-unit-hold", concurrency=1)
    def hold() -> None:
        assert go.wait(30)

    @background(name="flow-unit-free")
    def free() -> None:
        ran.set()

    try:
        first = hold.delay()
        second = hold.delay()  # deferred while the first holds the only slot
        free.delay()
        assert ran.wait(10)
        go.set()
        first.result_sync(30)
        second.result_sync(30)
    finally:
        go.set()
        executor.shutdown_sync(timeout=5)


def test_eager_tasks_ignore_limits() -> None:
    with eager_tasks() as backend:
        assert limited.delay("eager").result_sync(5) == "eager"
    assert backend.monitor.metrics().totals.get(("flow-unit-limited", "throttled")) is None


def test_concurrency_lease_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="concurrency_lease"):
        configure_background_tasks(get_local_executor(1), concurrency_lease=0)


# -- Celery: the Redis list of each priority is the one kombu serves in that order -----------
def test_celery_priorities_go_on_the_lists_kombu_serves_first(redis_url: str) -> None:
    from celery import Celery

    from pacificpy.background.backend import CeleryBackgroundBackend

    app = Celery("flow-priorities", broker=redis_url)
    backend = CeleryBackgroundBackend(celery_app=app)
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            assert list(channel.priority_steps) == list(range(10))
            served = [channel._q_for_pri("q", step) for step in channel.priority_steps]
            keys = []
            for priority in range(10):
                env = TaskEnvelope("a" * 32, "t", queue="q", priority=priority)
                key, frame = backend._frame(Message(env, b"{}"), None)
                # kombu puts a restored message back on the list of its own priority
                level = orjson.loads(frame)["properties"]["priority"]
                assert channel._q_for_pri("q", level) == key
                keys.append(key)
        # the worker's BRPOP takes the lists in `served` order: priority 9 first
        assert served == keys[::-1]
    finally:
        backend.shutdown_sync()


def test_a_state_that_cannot_decide_defers_the_start() -> None:
    """Redis down, or a state without flow control: never run unlimited, never lost."""
    from pacificpy.background import execution, flow

    class Broken(MemoryTaskState):
        def admit(self, *args: Any) -> tuple[str, float] | None:
            raise ConnectionError("state down")

    executor = get_local_executor(1)
    executor._state = Broken()
    try:
        env = TaskEnvelope("b" * 32, limited.name, ("x",), enqueued_at=time.time())
        held = flow.admit(env, limited.spec, executor)
        assert isinstance(held, flow.Held) and held.limit == "unavailable" and held.delay >= 1.0
        decision = execution.execute_sync(_codec.encode(env), executor)
        assert decision.kind == "defer" and decision.next_envelope == env
    finally:
        executor.shutdown_sync(timeout=5)
