"""The operator's one work queue (operator/work_queue.py): one reconcile per run at a time, triggers that
arrive meanwhile coalesced, re-adds through the timer, Conflicts read again, failures retried later; both run
kinds side by side. Threads are real; every wait is bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator

import pytest
from kubemill.errors import Conflict, KubemillError
from kubemill.operator import metrics
from kubemill.operator.work_queue import RETRY_SECONDS, WorkQueue

WAIT = 10.0


class Wakeups:
    """The queue's timer, driven by the test: records what was asked, `due()` fires it."""

    def __init__(self) -> None:
        self.asked: list[tuple[Hashable, float]] = []

    def after(self, key: Hashable, seconds: float) -> None:
        self.asked.append((key, seconds))

    def pending(self) -> int:
        return len({key for key, _ in self.asked})

    def stop(self) -> None:
        return None


@pytest.fixture
def timer() -> Wakeups:
    return Wakeups()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def queue(timer: Wakeups) -> Iterator[WorkQueue]:
    q = WorkQueue(workers=4, timer=timer)
    yield q
    q.stop()


def test_triggers_that_arrive_while_one_waits_are_coalesced_and_never_run_together(queue: WorkQueue) -> None:
    inside = threading.Event()
    release = threading.Event()
    running = 0
    most = 0
    calls = 0
    guard = threading.Lock()

    def work(namespace: str, name: str) -> None:
        nonlocal running, most, calls
        with guard:
            running += 1
            calls += 1
            most = max(most, running)
        inside.set()
        release.wait(WAIT)
        with guard:
            running -= 1

    queue.register("FlowRun", work)
    first = threading.Thread(target=queue.trigger, args=("FlowRun", "ns", "a"))
    first.start()
    assert inside.wait(WAIT)
    # While the first reconcile runs: one trigger waits for the lock, the other nine are dropped.
    others = [threading.Thread(target=queue.trigger, args=("FlowRun", "ns", "a")) for _ in range(10)]
    for t in others:
        t.start()
    wait_until(lambda: sum(t.is_alive() for t in others) == 1)  # only the waiting one is still there
    release.set()
    for t in [first, *others]:
        t.join(WAIT)
        assert not t.is_alive()
    assert (calls, most) == (2, 1)


def test_different_runs_and_kinds_do_not_wait_for_each_other(queue: WorkQueue) -> None:
    release = threading.Event()
    seen: list[tuple[str, str]] = []

    def slow(namespace: str, name: str) -> None:
        release.wait(WAIT)

    queue.register("FlowRun", slow)
    queue.register("ScriptRun", lambda ns, name: seen.append((ns, name)))
    blocked = threading.Thread(target=queue.trigger, args=("FlowRun", "ns", "a"))
    blocked.start()
    queue.trigger("ScriptRun", "ns", "a")  # same namespace and name, other kind: not behind the FlowRun
    queue.trigger("ScriptRun", "ns", "b")
    assert seen == [("ns", "a"), ("ns", "b")]
    release.set()
    blocked.join(WAIT)
    assert not blocked.is_alive()


def test_a_returned_delay_is_a_re_add_that_runs_on_the_queues_threads(
    queue: WorkQueue, timer: Wakeups
) -> None:
    done = threading.Event()
    threads: list[str] = []

    def work(namespace: str, name: str) -> float | None:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            return 3.0
        done.set()
        return None

    queue.register("FlowRun", work)
    queue.trigger("FlowRun", "ns", "a")
    assert timer.asked == [(("FlowRun", "ns", "a"), 3.0)]
    queue._due(timer.asked[0][0])  # the timer says it is time
    assert done.wait(WAIT)
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("kubemill-requeued")


def test_a_conflict_reads_again_at_once_then_waits_a_second(queue: WorkQueue, timer: Wakeups) -> None:
    attempts: list[str] = []
    dropped: list[tuple[str, str]] = []

    def work(namespace: str, name: str) -> None:
        attempts.append(name)
        raise Conflict("changed meanwhile")

    queue.register("FlowRun", work, on_conflict=lambda ns, name: dropped.append((ns, name)))
    queue.trigger("FlowRun", "ns", "a")
    assert len(attempts) == 3 and len(dropped) == 3  # each Conflict drops the cached run and reads again
    assert timer.asked == [(("FlowRun", "ns", "a"), 1.0)]


@pytest.mark.parametrize("error", [KubemillError("the API server said no"), RuntimeError("a bug")])
def test_a_failed_reconcile_is_counted_and_retried_later(
    queue: WorkQueue, timer: Wakeups, error: Exception
) -> None:
    def work(namespace: str, name: str) -> None:
        raise error

    counter = metrics.RECONCILE_ERRORS.labels("ScriptRun", type(error).__name__)
    before = counter._value.get()
    queue.register("ScriptRun", work)
    queue.trigger("ScriptRun", "ns", "a")
    assert timer.asked == [(("ScriptRun", "ns", "a"), RETRY_SECONDS)]
    assert counter._value.get() == before + 1


def test_holding_is_the_runs_lock_and_a_reconcile_may_take_it_again(queue: WorkQueue) -> None:
    inside: list[str] = []

    def work(namespace: str, name: str) -> None:
        with queue.holding("ScriptRun", namespace, name):  # the executor's reconcile does this
            inside.append(name)

    queue.register("ScriptRun", work)
    queue.trigger("ScriptRun", "ns", "a")
    assert inside == ["a"]
    with queue.holding("ScriptRun", "ns", "a"):
        other = threading.Thread(target=queue.trigger, args=("ScriptRun", "ns", "a"))
        other.start()
        other.join(0.2)
        assert other.is_alive()  # held by this thread: the trigger waits
    other.join(WAIT)
    assert inside == ["a", "a"]


def test_forget_drops_the_lock_and_sizes_count_each_kind(queue: WorkQueue, timer: Wakeups) -> None:
    queue.register("FlowRun", lambda ns, name: None)
    queue.register("ScriptRun", lambda ns, name: 2.0)
    queue.trigger("FlowRun", "ns", "a")
    queue.trigger("ScriptRun", "ns", "a")
    queue.trigger("ScriptRun", "ns", "b")
    assert queue.sizes("ScriptRun") == {"locks": 2, "requeued": 2}
    assert queue.sizes("FlowRun")["locks"] == 1
    queue.forget("ScriptRun", "ns", "a")
    queue.forget("FlowRun", "ns", "a")
    assert queue.sizes("ScriptRun")["locks"] == 1 and queue.sizes("FlowRun")["locks"] == 0


def test_a_kind_nobody_registered_is_an_error_not_a_silent_drop(queue: WorkQueue) -> None:
    with pytest.raises(KeyError, match="Schedule"):
        queue.trigger("Schedule", "ns", "a")
