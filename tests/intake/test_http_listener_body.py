"""The listener tells the app when a request's whole body is in (``BODY_RECEIVED``), so the
guard arms its body deadline only while a read could still wait: driven through the real
listener (uvicorn's httptools protocol behind the agent's gate) on loopback."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from agent.intake.http.listener import BODY_RECEIVED, HttpServer
from agent.limits import Limits

pytestmark = pytest.mark.anyio
HEAD = (
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Recorder:
    """An ASGI app that notes whether its request was marked when it started, then reads
    the body and answers it."""

    def __init__(self) -> None:
        self.marked: list[bool] = []
        self.started = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.marked.append(BODY_RECEIVED in scope.get("extensions", {}))
        self.started.set()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return await reader.readexactly(8)


async def test_a_body_is_marked_received_only_once_it_is_all_in() -> None:
    app = _Recorder()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    server = HttpServer(config, Limits())
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not serving.done()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD + b'{"a": 1}')  # whole, in one write
        assert await _answer(reader) == b'{"a": 1}'
        app.started.clear()
        writer.write(HEAD + b'{"a"')  # half the body: the app starts before the rest
        await app.started.wait()
        writer.write(b": 2}")
        assert await _answer(reader) == b'{"a": 2}'
        writer.close()
        await writer.wait_closed()
    finally:
        server.should_exit = True
        await serving
    assert app.marked == [True, False]
