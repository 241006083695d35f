"""Delivers recorded notifications on their channels, with retries and backoff, outside any transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from strowger.components.notification.channels import Channel
from strowger.components.notification.store import NotificationRow, NotificationStore
from strowger.errors import is_transient

log = logging.getLogger("strowger.notification")

DEFAULT_BACKOFF: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)  # seconds before retry 1, 2...; then failed


class NotificationSender:
    """Claims due rows, sends each on its channel, and records sent / retry later / failed."""

    def __init__(
        self,
        store: NotificationStore,
        channels: Mapping[str, Channel],
        *,
        backoff: tuple[float, ...] = DEFAULT_BACKOFF,
        batch_size: int = 50,
        lease: float = 60.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.channels = dict(channels)
        self.backoff = backoff
        self.batch_size = batch_size
        self.lease = lease  # longer than any one send takes: a crashed sender's rows come back after it
        self.poll_interval = poll_interval
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """New rows were committed: look now rather than at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            if await self.run_once() == self.batch_size:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()

    async def run_once(self) -> int:
        """Send what is due now; returns how many rows were attempted."""
        rows = await self.store.claim_due(self.batch_size, self.lease)
        for row in rows:
            await self._deliver(row)
        return len(rows)

    async def _deliver(self, row: NotificationRow) -> None:
        message = row.message
        channel = self.channels.get(message.channel)
        if channel is None:
            await self.store.mark_failed(message.id, f"no channel {message.channel!r} is configured")
            return
        try:
            await channel.send(message)
        except Exception as error:
            await self._failed(row, error)
        else:
            await self.store.mark_sent(message.id)

    async def _failed(self, row: NotificationRow, error: Exception) -> None:
        detail = f"{type(error).__name__}: {error}"
        attempt = row.attempts + 1
        if is_transient(error) and attempt <= len(self.backoff):
            log.warning("notification %s attempt %d failed, retrying: %s", row.message.id, attempt, detail)
            await self.store.mark_retry(row.message.id, detail, self.backoff[attempt - 1])
        else:
            log.error(
                "notification %s failed for good after %d attempts: %s", row.message.id, attempt, detail
            )
            await self.store.mark_failed(row.message.id, detail)
