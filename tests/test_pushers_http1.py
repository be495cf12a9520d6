"""The push worker's HTTP/1.1 client (app/pushers/http1.py) against real
sockets: small asyncio servers that answer exactly as each case needs."""

from __future__ import annotations

import asyncio

import pytest

from app.pushers.http1 import HttpError, Pool


class RawServer:
    """Reads each request (head + Content-Length body) and answers with
    `answer(request_bytes, n)` → bytes to write (None: say nothing), closing
    the connection afterwards when `close_after` says so."""

    def __init__(self, answer, close_after=lambda n: False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.server = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                n = len(self.requests)
                out = self.answer(request, n)
                if out is None:
                    await asyncio.sleep(3600)
                writer.write(out)
                await writer.drain()
                if self.close_after(n):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def url(self, path: str = "/push/a") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def close(self) -> None:
        self.server.close()


def created(_req, _n) -> bytes:
    return b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
async def pool():
    p = Pool(timeout=2.0, connect_timeout=2.0)
    yield p
    await p.close()


async def test_requests_reuse_one_kept_alive_connection(pool):
    srv = RawServer(created)
    await srv.start()
    try:
        for i in range(5):
            resp = await pool.post(srv.url(f"/push/d{i}"), [("TTL", "60")], b"x" * i)
            assert resp.status == 201
        assert srv.connections == 1 and pool.connections_made == 1
        first = srv.requests[0].decode("latin-1")
        assert first.startswith("POST /push/d0 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{srv.port}\r\n" in first and "TTL: 60\r\n" in first
        assert srv.requests[3].endswith(b"\r\n\r\nxxx")
        assert b"Content-Length: 3\r\n" in srv.requests[3]
    finally:
        await srv.close()


async def test_concurrent_requests_open_parallel_connections_up_to_the_limit():
    srv = RawServer(created)
    await srv.start()
    p = Pool(limit=3, timeout=5.0)
    try:
        results = await asyncio.gather(*(p.post(srv.url(), [], b"") for _ in range(12)))
        assert [r.status for r in results] == [201] * 12
        assert 1 <= srv.connections <= 3 and p.connections_made == srv.connections
    finally:
        await p.close()
        await srv.close()


async def test_answer_status_headers_and_chunked_body(pool):
    def throttled(_req, _n):
        return (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b"5\r\nslow \r\n5\r\ndown!\r\n0\r\n\r\n")

    srv = RawServer(throttled)
    await srv.start()
    try:
        resp = await pool.post(srv.url(), [], b"{}")
        assert resp.status == 429
        assert resp.headers["retry-after"] == "7"
        assert resp.body == b"slow down!"
        again = await pool.post(srv.url(), [], b"{}")  # the chunked answer ended cleanly
        assert again.status == 429 and srv.connections == 1
    finally:
        await srv.close()


async def test_informational_answer_is_skipped(pool):
    srv = RawServer(lambda _r, _n: b"HTTP/1.1 100 Continue\r\n\r\n"
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    await srv.start()
    try:
        resp = await pool.post(srv.url(), [], b"x")
        assert (resp.status, resp.body) == (201, b"ok")
    finally:
        await srv.close()


async def test_answer_without_length_ends_with_the_connection(pool):
    srv = RawServer(lambda _r, _n: b"HTTP/1.1 200 OK\r\n\r\nall of it", close_after=lambda n: True)
    await srv.start()
    try:
        resp = await pool.post(srv.url(), [], b"x")
        assert (resp.status, resp.body) == (200, b"all of it")
        resp = await pool.post(srv.url(), [], b"x")  # not reused: a fresh connection
        assert resp.status == 200 and srv.connections == 2
    finally:
        await srv.close()


async def test_request_on_a_connection_closed_before_answering_is_sent_again(pool):
    # The second request finds the kept-alive connection closing: no byte of an
    # answer comes, so it goes once more on a fresh connection.
    srv = RawServer(lambda _r, n: b"" if n == 2 else created(_r, n),
                    close_after=lambda n: n == 2)
    await srv.start()
    try:
        assert (await pool.post(srv.url(), [], b"a")).status == 201
        assert (await pool.post(srv.url(), [], b"b")).status == 201
        assert srv.connections == 2 and pool.connections_made == 2
        assert [r[-1:] for r in srv.requests] == [b"a", b"b", b"b"]
    finally:
        await srv.close()


async def test_request_on_a_fresh_connection_is_not_sent_twice(pool):
    srv = RawServer(lambda _r, _n: b"", close_after=lambda n: True)
    await srv.start()
    try:
        with pytest.raises(HttpError):
            await pool.post(srv.url(), [], b"a")
        assert len(srv.requests) == 1
    finally:
        await srv.close()


async def test_connection_the_server_closed_while_idle_is_not_used(pool):
    # The server closes after each answer without saying so (no Connection: close).
    srv = RawServer(created, close_after=lambda n: True)
    await srv.start()
    try:
        assert (await pool.post(srv.url(), [], b"a")).status == 201
        await asyncio.sleep(0.05)
        assert (await pool.post(srv.url(), [], b"b")).status == 201
        assert srv.connections == 2
        assert len(srv.requests) == 2  # each request reached the server once
    finally:
        await srv.close()


async def test_connection_close_answer_is_not_reused(pool):
    srv = RawServer(lambda _r, _n: b"HTTP/1.1 201 Created\r\nConnection: close\r\n"
                    b"Content-Length: 0\r\n\r\n")
    await srv.start()
    try:
        for _ in range(3):
            assert (await pool.post(srv.url(), [], b"")).status == 201
        assert srv.connections == 3
    finally:
        await srv.close()


async def test_timeout_when_the_server_never_answers():
    srv = RawServer(lambda _r, _n: None)
    await srv.start()
    p = Pool(timeout=0.3)
    try:
        with pytest.raises(HttpError) as err:
            await p.post(srv.url(), [], b"x")
        assert err.value.timeout and not err.value.permanent
    finally:
        await p.close()
        await srv.close()


async def test_refused_connection_is_a_transient_error(pool):
    srv = RawServer(created)
    await srv.start()
    url = srv.url()
    await srv.close()
    srv.server.close()
    await srv.server.wait_closed()
    with pytest.raises(HttpError) as err:
        await pool.post(url, [], b"x")
    assert not err.value.timeout and not err.value.permanent
    assert "connect" in err.value.detail


async def test_garbage_answer_is_a_protocol_error(pool):
    srv = RawServer(lambda _r, _n: b"SMTP ready\r\n\r\n")
    await srv.start()
    try:
        with pytest.raises(HttpError) as err:
            await pool.post(srv.url(), [], b"x")
        assert "protocol error" in err.value.detail
    finally:
        await srv.close()


@pytest.mark.parametrize("headers,path", [
    ([("Topic", "a\r\nX-Injected: 1")], "/push/a"),
    ([("Topic", "a\nb")], "/push/a"),
    ([("X\r\nY", "1")], "/push/a"),
    ([], "/push/a b"),
])
async def test_line_breaks_never_reach_the_request_head(pool, headers, path):
    srv = RawServer(created)
    await srv.start()
    try:
        with pytest.raises(HttpError) as err:
            await pool.post(srv.url(path), headers, b"x")
        assert err.value.permanent
        assert srv.requests == []
    finally:
        await srv.close()


async def test_non_ascii_path_is_percent_encoded(pool):
    srv = RawServer(created)
    await srv.start()
    try:
        assert (await pool.post(srv.url("/push/é?x=ü"), [], b"")).status == 201
        assert srv.requests[0].startswith(b"POST /push/%C3%A9?x=%C3%BC HTTP/1.1\r\n")
    finally:
        await srv.close()


async def test_not_an_http_url_is_permanent(pool):
    for url in ("ftp://127.0.0.1/x", "http:///nohost", "http://127.0.0.1:notaport/x"):
        with pytest.raises(HttpError) as err:
            await pool.post(url, [], b"")
        assert err.value.permanent, url
