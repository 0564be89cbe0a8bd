"""A server that answers every HTTP request with one recorded reply, as fast as one core can.

Measuring a client's CPU per request needs a server that is never the bottleneck: when
the server is slower than the client, the client's event loop wakes for one reply at a
time and its CPU per request measures the server's pace as much as its own work. The
emulator validates, counts and generates every answer (a few thousand a second on one
core); this server replays one answer the emulator gave, status line, headers
(`x-ratelimit-*` included) and body, byte for byte, on keep-alive connections, at tens
of thousands a second. It reads each request whole (headers, then `Content-Length`
bytes of body) before answering, so clients send exactly what they would send to the
emulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import cast

import aiohttp
from common import pin_to_cpu, server_process

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


class _Replay(asyncio.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(self.reply)


async def record(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The emulator's reply to one request, as raw HTTP/1.1 bytes to replay."""
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            kept = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP]
    head = [f"HTTP/1.1 {response.status} {response.reason}"]
    head += [f"{k}: {v}" for k, v in kept]
    head += [f"Content-Length: {len(payload)}", "Connection: keep-alive"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def _serve(reply: bytes, cpu: int, url_out: Connection) -> None:
    pin_to_cpu(cpu)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Replay(reply), "127.0.0.1", 0, backlog=1024)
        url_out.send(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
        return
    uvloop.run(main())


@contextmanager
def replay_server(reply: bytes, *, cpu: int = 0) -> Iterator[str]:
    """Serve `reply` to every request from a child process on CPU `cpu`; yield its base URL."""
    with server_process(_serve, reply, cpu, name="the replay server") as url:
        yield url
