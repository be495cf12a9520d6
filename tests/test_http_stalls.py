"""Clients that stop half-way (app/api/http.py: `body_read`, `send_chunk`): a request
body that stops arriving is answered 408 and a download the client stops taking is
cut off, both after HTTP_STALL_TIMEOUT, instead of holding a connection, a handler
and an open file for as long as the client likes. Raw sockets, so the client can
stop exactly where it wants."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from tests.factories import make_user

API = "/api/v1"
STALL = 0.5


@pytest.fixture
def settings_overrides():
    return {"http_stall_timeout": STALL}


async def _open(server, rcvbuf: int | None = None):
    sock = socket.socket()
    if rcvbuf is not None:  # a small window: the server's output backs up quickly
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    return await asyncio.open_connection(sock=sock)


async def _response(reader) -> tuple[int, dict, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return status, headers, body


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_json_body_that_stops_arriving_is_408(server, caplog):
    reader, writer = await _open(server)
    try:
        writer.write(b"POST " + API.encode() + b"/auth/register HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                     b'{"email": ')
        status, headers, body = await _response(reader)
    finally:
        writer.close()
    assert status == 408, body
    assert b'"request_timeout"' in body
    assert headers.get("connection", "").lower() == "close"
    assert _errors(caplog) == []


async def test_an_upload_that_stops_arriving_is_408(server, deps, caplog):
    alice = await make_user(deps)
    auth = alice.headers["Authorization"].encode()
    reader, writer = await _open(server)
    try:
        writer.write(b"POST " + API.encode() + b"/media HTTP/1.1\r\nHost: t\r\n"
                     b"Authorization: " + auth + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
                     b"Content-Length: 1000000\r\n\r\n"
                     b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                     b"filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                     + os.urandom(5000))
        status, _headers, body = await _response(reader)
    finally:
        writer.close()
    assert status == 408, body
    assert b'"request_timeout"' in body
    assert _errors(caplog) == []


async def test_a_download_the_client_stops_taking_is_cut_off(server, client, deps, caplog):
    import aiohttp

    alice = await make_user(deps)
    size = 12 * 1024 * 1024  # more than the socket buffers on both sides hold
    form = aiohttp.FormData()
    form.add_field("file", os.urandom(size), filename="big.bin",
                   content_type="application/octet-stream")
    r = await client.post(f"{API}/media", data=form, headers=alice.headers)
    assert r.status == 201, await r.text()
    media_id = (await r.json())["media"]["id"]
    caplog.set_level(logging.INFO)

    reader, writer = await _open(server, rcvbuf=4096)
    try:
        writer.write(f"GET {API}/media/{media_id}/content HTTP/1.1\r\nHost: t\r\n"
                     f"Authorization: {alice.headers['Authorization']}\r\n\r\n".encode())
        await asyncio.sleep(STALL * 4)  # taking nothing
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b" 200 " in head.split(b"\r\n")[0]
        got = 0
        try:
            while got < size:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
                if not chunk:
                    break
                got += len(chunk)
        except ConnectionResetError:
            pass
    finally:
        writer.close()
    assert got < size  # cut off, not sent whole once the client read again
    assert any(r.getMessage() == "client gone mid-request" for r in caplog.records)
    assert _errors(caplog) == []
