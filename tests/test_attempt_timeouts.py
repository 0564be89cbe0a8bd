"""`engine.deadlines`: attempts bounded by one watchdog per timeout instead of a timer each."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from genai_coroutines.engine import deadlines


async def attempt(seconds: float, hang: asyncio.Event) -> bool:
    """An attempt that waits on `hang` under a deadline; True when it timed out."""
    deadline = deadlines.start(seconds)
    try:
        await hang.wait()
        return False
    except asyncio.CancelledError:
        if deadline.timed_out():
            return True
        raise
    finally:
        deadline.end()


async def test_an_attempt_past_its_deadline_is_cancelled_and_told_it_timed_out() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(attempt(0.05, asyncio.Event()), timeout=5)
    assert loop.time() - started >= 0.05


async def test_attempts_that_finish_in_time_are_not_cancelled() -> None:
    released = asyncio.Event()
    tasks = [asyncio.create_task(attempt(0.5, released)) for _ in range(50)]
    await asyncio.sleep(0)  # every attempt has started
    released.set()
    assert await asyncio.gather(*tasks) == [False] * 50


async def test_a_cancel_from_outside_is_not_taken_for_a_timeout() -> None:
    task = asyncio.create_task(attempt(60, asyncio.Event()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_only_the_expired_attempts_are_cancelled_in_a_mixed_crowd() -> None:
    never, soon = asyncio.Event(), asyncio.Event()
    slow = [asyncio.create_task(attempt(0.05, never)) for _ in range(3)]
    quick = [asyncio.create_task(attempt(0.05, soon)) for _ in range(3)]
    other = asyncio.create_task(attempt(30, never))  # another timeout, its own watchdog
    await asyncio.sleep(0)
    soon.set()
    assert await asyncio.gather(*quick) == [False] * 3
    assert await asyncio.gather(*slow) == [True] * 3
    assert not other.done()
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other


async def test_no_watchdog_outlives_the_attempts() -> None:
    released = asyncio.Event()
    tasks = [asyncio.create_task(attempt(600, released)) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) > 6  # the attempts, this test and a watchdog
    released.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0)  # the cancelled watchdog unwinds
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_one_slow_attempt_does_not_let_finished_ones_pile_up() -> None:
    never = asyncio.Event()
    slow = asyncio.create_task(attempt(600, never))
    await asyncio.sleep(0)
    for _ in range(2000):
        done = deadlines.start(600)
        done.end()
    assert len(done.watch.queue) <= 2 * 2 + deadlines.COMPACT_SLACK + 1
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


def test_a_closed_event_loop_is_not_kept_alive() -> None:
    def one_batch() -> weakref.ref[asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()
        try:
            assert not loop.run_until_complete(attempt(60, released()))
        finally:
            loop.close()
        return weakref.ref(loop)

    first = one_batch()
    one_batch()  # the loop served last may be remembered, not one before it
    gc.collect()
    assert first() is None


def released() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event
