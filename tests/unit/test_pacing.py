"""The loop pacer: consumers leave HTTP requests their share of the event loop, and only then."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from strowger.bus.pacing import PROBE_BATCH, LoopPacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pacer(clock: Clock, share: float = 0.5) -> LoopPacer:
    return LoopPacer(share, load_window=0.5, busy_load=0.2, batch_budget=0.01, burst=0.05, clock=clock)


def busy_api(paced: LoopPacer, clock: Clock, seconds: float = 0.5) -> None:
    """Requests taking the whole loop for ``seconds`` (one of a millisecond at a time)."""
    for _ in range(int(seconds * 1000)):
        clock.now += 0.001
        paced.served(0.001)


def test_with_no_request_served_consumers_never_wait_and_take_full_batches() -> None:
    clock = Clock()
    paced = pacer(clock)
    paced.spent(3.0)  # a long batch, nobody waiting for the loop
    assert paced.delay() == 0.0
    assert paced.batch_size(100, 0.02) == 100


def test_a_lightly_used_api_does_not_hold_the_consumers_back() -> None:
    clock = Clock()
    paced = pacer(clock)
    for _ in range(50):  # a 2 ms request every 100 ms: 2% of the loop
        clock.now += 0.1
        paced.served(0.002)
    assert not paced.busy
    paced.spent(1.0)
    assert paced.delay() == 0.0
    assert paced.batch_size(100, 0.002) == 5  # yet batches stay short, so requests interleave


def test_while_the_api_is_busy_a_batch_over_its_share_makes_the_next_wait() -> None:
    clock = Clock()
    paced = pacer(clock)
    busy_api(paced, clock)
    assert paced.busy
    clock.now += 0.2
    paced.spent(0.2)  # 0.2 s taken from a bucket of 0.05
    assert paced.delay() == pytest.approx(0.15 / 0.5)
    clock.now += 0.31  # refilled at half a second per second: in credit again
    assert paced.delay() == 0.0


def test_requests_starved_by_unchecked_batches_still_make_the_api_busy() -> None:
    """The trap seen in a bench run: batches took most of the loop, requests got 150 a second
    (13% of the loop), under ``busy_load`` of the whole loop, so the batches were never held."""
    clock = Clock()
    paced = LoopPacer(0.1, load_window=0.5, busy_load=0.2, burst=0.05, clock=clock)
    for _ in range(100):  # one second: every 10 ms a batch of 8.5 ms, then a request of 1.3 ms
        clock.now += 0.0085
        paced.spent(0.0085)
        clock.now += 0.0013
        paced.served(0.0013)
    assert paced.load < 0.2  # under busy_load of the whole loop
    assert paced.busy
    assert paced.delay() > 0  # the batches now owe the requests their time
    assert paced.background_load > 0.7


def test_the_api_stays_busy_across_a_batch_that_kept_it_from_serving() -> None:
    clock = Clock()
    paced = pacer(clock)
    busy_api(paced, clock)
    clock.now += 0.05  # a batch ran: no request could be served meanwhile
    assert paced.busy


def test_several_batches_may_run_in_one_turn_while_time_is_left() -> None:
    clock = Clock()
    paced = pacer(clock)
    busy_api(paced, clock)
    paced.spent(0.02)
    assert paced.delay() == 0.0
    paced.spent(0.02)
    assert paced.delay() == 0.0
    paced.spent(0.02)
    assert paced.delay() > 0


def test_batches_are_sized_to_the_budget_while_busy() -> None:
    clock = Clock()
    paced = pacer(clock)
    busy_api(paced, clock)
    assert paced.batch_size(100, 0.001) == 10
    assert paced.batch_size(100, 0.5) == 1  # never zero
    assert paced.batch_size(5, 0.0001) == 5  # never above the consumer's own size
    assert paced.batch_size(100, 0.0) == PROBE_BATCH  # no cost known yet: a small batch measures it
    assert paced.batch_size(2, 0.0) == 2
    clock.now += 2.0
    assert paced.batch_size(100, 0.001) == 100  # the API went quiet


def test_a_whole_share_never_waits() -> None:
    clock = Clock()
    paced = pacer(clock, share=1.0)
    busy_api(paced, clock)
    paced.spent(10.0)
    assert paced.delay() == 0.0


async def test_turn_returns_at_once_when_nothing_is_owed() -> None:
    paced = LoopPacer()
    await paced.turn()
    assert paced.delay() == 0.0


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        LoopPacer(0.0)


def test_under_a_flood_the_consumers_keep_their_share_and_owe_a_second_at_most() -> None:
    clock = Clock()
    paced = LoopPacer(0.1, load_window=0.5, busy_load=0.2, burst=0.05, clock=clock)
    busy_api(paced, clock, seconds=3.0)
    paced.spent(0.05)  # a batch of 50 ms: the whole burst, and 0 left
    clock.now += 0.1  # 100 ms later: 10 ms earned back at a share of 0.1
    assert paced.delay() == 0.0
    paced.spent(0.5)  # a long batch run while the API was idle
    assert paced.delay() == pytest.approx(1.0)  # the debt is capped at a second of waiting
    clock.now += 3.0  # the requests stopped: nothing is owed to an API that is not busy
    assert not paced.busy
    assert paced.delay() == 0.0


def test_the_api_is_idle_only_with_no_request_in_and_nothing_ended_within_the_gap() -> None:
    clock = Clock()
    paced = LoopPacer(0.1, idle_gap=0.002, clock=clock)
    assert paced.idle
    paced.begin()
    clock.now += 1.0
    assert not paced.idle  # a slow request is still in the server
    paced.served(1.0)
    assert not paced.idle
    clock.now += 0.003
    assert paced.idle
    paced.spent(0.01)  # a batch ended: the next one waits a gap, so requests get a look in
    assert not paced.idle
    clock.now += 0.003
    assert paced.idle


async def test_a_waiting_batch_runs_as_soon_as_the_api_goes_idle_one_at_a_time() -> None:
    paced = LoopPacer(0.1, idle_gap=0.002)
    paced.begin()
    for _ in range(2000):  # a busy API (0.5 s of requests in the window)
        paced.served(0.001)
        paced.begin()
    paced.spent(1.0)  # the share is owed a second
    first = asyncio.create_task(paced.turn())
    second = asyncio.create_task(paced.turn())
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()  # a request is in the server
    paced.served(0.001)  # it leaves: the API is idle after the gap
    await asyncio.wait_for(asyncio.shield(first), 1.0)
    assert not second.done()  # one batch per gap: the first one's end looks again
    paced.spent(0.001)
    await asyncio.wait_for(second, 1.0)


def test_the_platform_paces_by_its_background_share_setting(tmp_path: Path) -> None:
    from strowger.bootstrap import empty_platform
    from strowger.settings import Settings

    platform = empty_platform(Settings(database_url=f"sqlite:///{tmp_path}/s.db", background_share=0.25))
    assert platform.pacer.share == 0.25
    with pytest.raises(ValueError, match="background_share"):
        Settings(background_share=0)
