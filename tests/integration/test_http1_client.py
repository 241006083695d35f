"""The webhook HTTP/1.1 client against listeners that misbehave at the socket level.

The contract every webhook client passes is in test_hub_delivery.py (a real uvicorn listener);
these are the cases a well-behaved server never produces: connections closed under the
client, answers delimited by the close, interim answers, garbage, and TLS.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from strowger.tmf.http1 import Http1Client, Http1Error, Http1Timeout, InvalidRequest

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's head and body (Content-Length), or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head + await reader.readexactly(length)


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[Http1Client]:
    http = Http1Client(timeout=2.0, max_body=1024)
    yield http
    await http.close()


async def test_a_kept_connection_the_listener_closed_is_replaced_once(client: Http1Client) -> None:
    # The listener answers the first request of each connection and drops the connection on the
    # second without answering: what a keep-alive timeout on its side looks like to us.
    connections = 0

    async def first_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(NO_CONTENT)
        await writer.drain()
        await read_request(reader)  # and close without a word

    async with serving(first_only) as port:
        url = f"http://127.0.0.1:{port}/cb"
        assert (await client.post(url, None, b"{}", {})).status == 204
        assert (await client.post(url, None, b"{}", {})).status == 204  # retried on a new connection
    assert connections == 2


async def test_a_new_connection_that_breaks_is_not_retried(client: Http1Client) -> None:
    requests = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1

    async with serving(drop) as port:
        with pytest.raises(Http1Error, match="closed before an answer"):
            await client.post(f"http://127.0.0.1:{port}/cb", None, b"{}", {})
    assert requests == 1


async def test_an_answer_delimited_by_the_close_is_read(client: Http1Client) -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nno such order")
        await writer.drain()

    async with serving(http10) as port:
        answer = await client.post(f"http://127.0.0.1:{port}/cb", None, b"{}", {})
    assert (answer.status, answer.reason, answer.body) == (400, "Bad Request", b"no such order")


async def test_chunked_answers_and_interim_ones_are_understood(client: Http1Client) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nslow \r\n4\r\ndown\r\n0\r\n\r\n"
            )
            await writer.drain()

    async with serving(chunked) as port:
        for _ in range(2):  # and the connection is still good for the next POST
            answer = await client.post(f"http://127.0.0.1:{port}/cb", None, b"{}", {})
            assert (answer.status, answer.headers["retry-after"], answer.body) == (503, "7", b"slow down")


async def test_garbage_is_no_answer(client: Http1Client) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with serving(garbage) as port:
        with pytest.raises(Http1Error, match="malformed"):
            await client.post(f"http://127.0.0.1:{port}/cb", None, b"{}", {})


async def test_a_cut_off_exchange_leaves_no_connection_behind_for_the_next_post() -> None:
    http = Http1Client(timeout=0.3, max_body=1024)
    connections = 0

    async def slow_then_fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        late = connections == 1
        while await read_request(reader) is not None:
            if late:  # past the client's timeout: this answer must never be read as the next one's
                await asyncio.sleep(0.6)
                writer.write(b"HTTP/1.1 500 Late\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(NO_CONTENT)
            await writer.drain()

    try:
        async with serving(slow_then_fast) as port:
            url = f"http://127.0.0.1:{port}/cb"
            with pytest.raises(Http1Timeout):
                await http.post(url, None, b"{}", {})
            assert (await http.post(url, None, b"{}", {})).status == 204
            assert connections == 2
    finally:
        await http.close()


async def test_requests_that_cannot_be_sent_are_refused_before_connecting(client: Http1Client) -> None:
    with pytest.raises(InvalidRequest, match="line break"):
        await client.post("http://127.0.0.1:1/cb", None, b"{}", {"X-Note": "a\nb"})
    with pytest.raises(InvalidRequest, match="header name"):
        await client.post("http://127.0.0.1:1/cb", None, b"{}", {"Bad Name": "x"})
    with pytest.raises(InvalidRequest, match="http"):
        await client.post("ftp://127.0.0.1/cb", None, b"{}", {})


# --- TLS ------------------------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_tls_goes_by_the_host_name_while_connecting_to_the_checked_address(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "hooks.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            seen.append(request)
            writer.write(NO_CONTENT)
            await writer.drain()

    trusting = Http1Client(timeout=2.0, ssl_context=ssl.create_default_context(cafile=str(cert)))
    stranger = Http1Client(timeout=2.0)  # the system's trust store: a self-signed listener is refused
    try:
        async with serving(record, tls=server_tls) as port:
            url = f"https://hooks.test:{port}/cb"  # .test resolves nowhere: the address is ours to give
            assert (await trusting.post(url, "127.0.0.1", b"{}", {})).status == 204
            assert seen[0].startswith(b"POST /cb HTTP/1.1\r\nHost: hooks.test:%d\r\n" % port)
            with pytest.raises(Http1Error, match="CERTIFICATE_VERIFY_FAILED"):
                await stranger.post(url, "127.0.0.1", b"{}", {})
            with pytest.raises(Http1Error, match=r"match|CERTIFICATE_VERIFY_FAILED"):
                # the same listener under another name: the certificate does not cover it
                await trusting.post(f"https://other.test:{port}/cb", "127.0.0.1", b"{}", {})
    finally:
        await trusting.close()
        await stranger.close()


def test_it_runs_on_uvloop_as_the_platform_serves() -> None:
    # uvloop's transports are not asyncio.Transport subclasses: a check on the type broke it once.
    async def exchange() -> list[int]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader) is not None:
                writer.write(NO_CONTENT)
                await writer.drain()

        http = Http1Client(timeout=2.0)
        try:
            async with serving(answer) as port:
                return [
                    (await http.post(f"http://127.0.0.1:{port}/cb", None, b"{}", {})).status for _ in range(3)
                ]
        finally:
            await http.close()

    assert uvloop.run(exchange()) == [204, 204, 204]


async def test_connections_idle_too_long_are_closed_and_not_reused() -> None:
    http = Http1Client(timeout=2.0, idle_timeout=0.2)
    opened: list[str] = []
    ended: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        opened.append(peer)
        while await read_request(reader) is not None:
            writer.write(NO_CONTENT)
            await writer.drain()
        ended.append(peer)

    try:
        async with serving(answer) as first, serving(answer) as second:
            await http.post(f"http://127.0.0.1:{first}/cb", None, b"{}", {})
            await http.post(f"http://127.0.0.1:{first}/cb", None, b"{}", {})
            assert len(opened) == 1  # kept alive while fresh
            await asyncio.sleep(0.3)
            await http.post(f"http://127.0.0.1:{second}/cb", None, b"{}", {})  # sweeps the first's
            await asyncio.sleep(0.1)
            assert ended == opened[:1]  # the first listener's idle connection was closed by us
            await asyncio.sleep(0.3)
            await http.post(f"http://127.0.0.1:{second}/cb", None, b"{}", {})
            assert len(opened) == 3  # the second listener's stale connection was not reused
    finally:
        await http.close()
