"""A publish given up on (timeout, cancel) must not leave an unretrieved failure behind.

librdkafka reports every message eventually; when the publisher has already raised
ServiceUnavailable, that late failure is settled on a future nobody awaits, and asyncio
would log "Future exception was never retrieved" for each such batch.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from strowger.bus.kafka import _consume_outcome


async def test_a_late_failure_of_an_abandoned_publish_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        abandoned: asyncio.Future[None] = loop.create_future()
        abandoned.add_done_callback(_consume_outcome)
        abandoned.set_exception(RuntimeError("message timed out"))
        await asyncio.sleep(0)  # the done callback runs
        del abandoned
        gc.collect()

        control: asyncio.Future[None] = loop.create_future()  # the same without the callback is reported
        control.set_exception(RuntimeError("message timed out"))
        del control
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert [context["message"] for context in unretrieved] == ["Future exception was never retrieved"]
