"""Where notifications go: pluggable channels behind one small protocol.

A channel delivers one :class:`OutboundMessage` or raises: a
:class:`~strowger.errors.TransientError` (the gateway is down, a timeout, a
5xx: the sender retries with backoff) or a :class:`~strowger.errors.PermanentError`
(a refused address, a 4xx: marked failed at once). SMS, email and push are
channel *names*; the platform binds each to an implementation. Built in:

* :class:`JsonLinesChannel` — appends JSON lines under a directory
  (``var/notifications/<channel>.jsonl``): the default sink for sms/email/push
  until a gateway adapter (SMPP, SMTP, FCM...) is plugged in, and an audit trail;
* :class:`ConsoleChannel` — one JSON line per message on a stream (stdout);
* :class:`WebhookChannel` — POSTs the message as JSON with the hub delivery's
  :class:`~strowger.tmf.delivery.WebhookSender` (SSRF guard, pinned address,
  no redirects, outcome classified).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, TextIO

import orjson

from strowger.errors import ServiceUnavailable
from strowger.tmf.delivery import DeliveryOptions, WebhookSender
from strowger.tmf.hubs import CallbackGuard

SMS = "sms"
EMAIL = "email"
PUSH = "push"


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One rendered notification for one recipient on one channel."""

    id: str
    channel: str
    recipient: str
    subject: str
    body: str
    template: str
    event_id: str
    entity_key: str

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


class Channel(Protocol):
    """Delivers messages on one medium."""

    async def send(self, message: OutboundMessage) -> None:
        """Deliver ``message``; TransientError to be retried later, PermanentError if it never will be."""


class JsonLinesChannel:
    """Appends each message as a JSON line to ``<directory>/<message.channel>.jsonl``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: OutboundMessage) -> None:
        await asyncio.to_thread(self._append, message)

    def _append(self, message: OutboundMessage) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with (self.directory / f"{message.channel}.jsonl").open("ab") as sink:
                sink.write(message.to_json() + b"\n")
        except OSError as exc:  # a full or read-only disk may recover: retried
            raise ServiceUnavailable(f"cannot write notification {message.id}: {exc}") from exc

    def read(self, channel: str) -> list[dict[str, str]]:
        """The messages written for ``channel`` so far (for tests and the demo)."""
        path = self.directory / f"{channel}.jsonl"
        if not path.exists():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


class ConsoleChannel:
    """Writes each message as one JSON line to ``stream`` (stdout by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    async def send(self, message: OutboundMessage) -> None:
        self.stream.write(message.to_json().decode() + "\n")
        self.stream.flush()


class WebhookChannel:
    """POSTs each message as JSON to ``url`` through the SSRF-guarded webhook sender."""

    def __init__(
        self,
        url: str,
        guard: CallbackGuard,
        options: DeliveryOptions | None = None,
        sender: WebhookSender | None = None,
    ) -> None:
        self.url = url
        self.sender = sender or WebhookSender(guard, options or DeliveryOptions())

    async def send(self, message: OutboundMessage) -> None:
        # ListenerUnavailable (transient) / ListenerRejected, CallbackRefused (permanent) pass through.
        await self.sender.send(self.url, message.to_json(), {"X-Notification-Id": message.id})

    async def close(self) -> None:
        await self.sender.close()
