"""A lean HTTP/1.1 POST client for webhooks: keep-alive connections per origin, httptools' parser.

The hub POSTs small signed JSON bodies to a few listeners, thousands of times a second, and
needs only the status, the reason, a header or two and the start of the body. aiohttp (kept
as :class:`~strowger.tmf.delivery.AiohttpWebhookClient`) builds a request object, a writer,
a response object, a timer and a stream per POST: about 250 µs of CPU each on this machine,
against about 65 µs here for the same POST (docs/benchmarks.md, Hub, session 19). The parsing
is llhttp through ``httptools`` (the parser uvicorn serves with); this module only frames the
request and keeps the connections.

What it does: ``POST`` with ``Content-Length``; connections kept alive per origin (scheme,
host, port and the address connected to) and reused only when the listener allows it; a
connection that was idle and turns out closed is retried once on a new one (no byte of an
answer came, and a webhook is deduplicated by its event id anyway); TLS with the host name for
SNI and the certificate check; at most ``max_body`` bytes of an answer's body are read (a larger
answer costs its connection, not memory). What it does not do, on purpose: DNS (the caller
connects to the address the SSRF guard checked), redirects, proxies, cookies, compression,
``Expect: 100-continue``, HTTP/2.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Http1Client", "Http1Error", "Http1Response", "Http1Timeout", "InvalidRequest", "is_ip_literal"]


class Http1Error(Exception):
    """No answer came: the connection failed, broke, or the answer was not HTTP/1.x."""


class Http1Timeout(Http1Error):
    """No complete answer within the client's timeout (connect, write and read together)."""


class InvalidRequest(ValueError):
    """The request cannot be sent as asked (a header with a line break, a URL without a host)."""


@dataclass(frozen=True, slots=True)
class Http1Response:
    """An answer: status, reason phrase, headers (lower-case names) and the start of the body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    """What a URL means to this client, parsed once per distinct URL."""

    scheme: str
    host: str  # without brackets
    port: int
    path: bytes  # path and query, as sent on the request line
    host_header: bytes  # the URL's netloc, as written (the name, not the address connected to)
    literal: bool  # the host is an IP address: nothing to resolve


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` (without brackets) is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"not an http(s) URL with a host: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidRequest(f"bad port in {url!r}") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(
        parts.scheme,
        parts.hostname,
        port,
        _ascii(path, "URL path"),
        _ascii(parts.netloc, "URL host"),
        is_ip_literal(parts.hostname),
    )


def _ascii(text: str, what: str) -> bytes:
    if any(character in text for character in "\r\n\0 "):
        raise InvalidRequest(f"{what} has a space or a line break: {text!r}")
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} is not ASCII (send it percent-encoded): {text!r}") from exc


def _head(target: _Target, length: int, headers: Mapping[str, str]) -> bytes:
    lines = [
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (target.path, target.host_header, length)
    ]
    for name, value in headers.items():
        if not name.isascii() or not name.replace("-", "").isalnum():
            raise InvalidRequest(f"bad header name {name!r}")
        if "\r" in value or "\n" in value or "\0" in value:
            raise InvalidRequest(f"header {name} has a line break")  # header injection
        lines.append(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("latin-1", errors="replace")))
    lines.append(b"\r\n")
    return b"".join(lines)


@dataclass(slots=True)
class _Exchange:
    """The answer being read on a connection."""

    max_body: int
    future: asyncio.Future[Http1Response]
    reason: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    status: int = 0
    received: bool = False  # a byte of an answer came


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the ``on_*`` methods while parsing."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._exchange: _Exchange | None = None
        self.reusable = False  # the last answer was complete and the listener keeps the connection
        self.lost = False
        self.idle_since = 0.0  # loop time it was last put back in the pool

    # --- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but is one

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:  # a listener talking out of turn: the connection cannot be trusted
            self.close()
            return
        exchange.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Http1Error(f"malformed answer: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(Http1Error("the listener switched protocols"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        exchange = self._exchange
        if exchange is not None and exchange.status:  # a body delimited by the close: complete
            self._finish()
        elif exchange is not None:
            self._fail(Http1Error(f"connection closed before an answer{f': {exc}' if exc else ''}"))

    # --- httptools ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._exchange is not None:
            self._exchange.reason, self._exchange.headers, self._exchange.status = b"", {}, 0
            self._exchange.body.clear()

    def on_status(self, status: bytes) -> None:
        if self._exchange is not None:
            self._exchange.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._exchange is not None:
            self._exchange.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        if self._exchange is not None:
            self._exchange.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        room = exchange.max_body - len(exchange.body)
        exchange.body += body[:room]
        if len(body) > room:  # more than we read: answer with the start, give the connection up
            self._finish()
            self.close()

    def on_message_complete(self) -> None:
        exchange = self._exchange
        if exchange is None or 100 <= exchange.status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self.reusable = self._parser.should_keep_alive()
        self._finish()

    # --- used by the client -------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, max_body: int) -> _Exchange:
        assert self._transport is not None and self._exchange is None
        future = asyncio.get_running_loop().create_future()
        self._exchange = exchange = _Exchange(max_body, future)
        self.reusable = False
        self._transport.write(head + body)
        return exchange

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    @property
    def usable(self) -> bool:
        return (
            self.reusable
            and not self.lost
            and self._transport is not None
            and not self._transport.is_closing()
        )

    def _finish(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None and not exchange.future.done():
            reason = exchange.reason.decode("latin-1").strip()
            exchange.future.set_result(
                Http1Response(exchange.status, reason, exchange.headers, bytes(exchange.body))
            )

    def _fail(self, error: Http1Error) -> None:
        exchange, self._exchange = self._exchange, None
        self.close()
        if exchange is not None and not exchange.future.done():
            exchange.future.set_exception(error)


_Origin = tuple[str, str, int, str]  # scheme, host name, port, address connected to


class Http1Client:
    """POSTs over kept-alive HTTP/1.1 connections; one instance serves every listener.

    ``timeout`` bounds each POST (connect, write and read); at most ``max_idle`` connections
    per origin are kept between POSTs, each for at most ``idle_timeout`` seconds (so a hub
    with thousands of listeners does not hold a socket to each for ever); ``ssl_context``
    verifies listeners' certificates (the system's trust store by default).
    """

    def __init__(
        self,
        *,
        timeout: float,
        max_body: int = 64 * 1024,
        max_idle: int = 128,
        idle_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_body = max_body
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}  # per origin, oldest first
        self._open: set[_Connection] = set()
        self._swept_at = 0.0

    async def post(
        self, url: str, address: str | None, body: bytes, headers: Mapping[str, str]
    ) -> Http1Response:
        """POST ``body`` to ``url`` over a connection to ``address`` (None: the URL's host is an IP).

        Raises :class:`InvalidRequest` before connecting when the request cannot be sent,
        :class:`Http1Timeout` or :class:`Http1Error` when no answer came.
        """
        target = _target(url)
        if address is None and not target.literal:
            raise InvalidRequest(f"no checked address for {target.host!r}: this client resolves no name")
        head = _head(target, len(body), headers)
        origin = (target.scheme, target.host, target.port, address or target.host)
        now = asyncio.get_running_loop().time()
        if now - self._swept_at >= self.idle_timeout:
            self._sweep(now)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(origin, head, body)
        except TimeoutError as exc:
            raise Http1Timeout(f"no answer within {self.timeout:g} s") from exc

    async def close(self) -> None:
        """Close every connection; the client may be used again (it opens new ones)."""
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    async def _exchange(self, origin: _Origin, head: bytes, body: bytes) -> Http1Response:
        connection, reused = self._take_idle(origin), True
        if connection is None:
            connection, reused = await self._connect(origin), False
        try:
            exchange = connection.send(head, body, self.max_body)
            try:
                response = await exchange.future
            except Http1Error:
                if not reused or exchange.received:
                    raise
                # The listener closed an idle connection as we wrote on it: once more, on a new one.
                self._open.discard(connection)
                connection = await self._connect(origin)
                response = await connection.send(head, body, self.max_body).future
        except BaseException:  # including a timeout or a cancellation mid-answer: never reused
            connection.close()
            self._open.discard(connection)
            raise
        self._release(origin, connection)
        return response

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        expired = asyncio.get_running_loop().time() - self.idle_timeout
        while idle:
            connection = idle.pop()  # the most recently used: the likeliest to be alive
            if connection.usable and connection.idle_since > expired:
                return connection
            self._discard(connection)
        return None

    def _release(self, origin: _Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if connection.usable and len(idle) < self.max_idle:
            connection.idle_since = asyncio.get_running_loop().time()
            idle.append(connection)
            return
        self._discard(connection)

    def _sweep(self, now: float) -> None:
        """Close the connections idle for longer than ``idle_timeout``; forget origins left empty."""
        self._swept_at = now
        for origin, idle in list(self._idle.items()):
            while idle and (now - idle[0].idle_since >= self.idle_timeout or not idle[0].usable):
                self._discard(idle.pop(0))
            if not idle:
                del self._idle[origin]

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port, address = origin
        tls = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection, address, port, ssl=tls, server_hostname=host if tls else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise Http1Error(f"cannot connect to {address}:{port}: {type(exc).__name__}: {exc}") from exc
        self._open.add(connection)
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context
