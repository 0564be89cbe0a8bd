"""Reading a streamed (`stream: true`) response down to its final event.

A batch wants the finished response, not the deltas, so the reader skips every
event until a terminal one (`response.completed`, `response.incomplete`,
`response.failed` or `error`) and returns that event's JSON; the processor then
treats it like a non-streamed body. A stream that ends without one returns b"",
which the processor retries: the answer was cut short.

Lines are split by hand over raw chunks rather than with `StreamReader.readline`,
whose line limit (64 KiB) a `response.completed` event carrying a long answer can
exceed. Only events whose data mentions a terminal type are parsed as JSON, so long
streams of deltas cost a substring search each.
"""

from __future__ import annotations

import aiohttp
import orjson

TERMINAL_TYPES = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "error"}
)
_MARKERS = tuple(f'"{kind}"'.encode() for kind in TERMINAL_TYPES)


def is_event_stream(content_type: str | None) -> bool:
    return content_type is not None and content_type.startswith("text/event-stream")


async def read_final_event(response: aiohttp.ClientResponse) -> bytes:
    """The terminal event's data of an SSE reply, or the whole body of any other reply."""
    if response.status != 200 or not is_event_stream(response.headers.get("Content-Type")):
        return await response.read()
    buffer = b""
    data: list[bytes] = []
    async for chunk in response.content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            found = _feed(line.rstrip(b"\r"), data)
            if found is not None:
                return found
    if buffer:
        _feed(buffer.rstrip(b"\r"), data)
    return _dispatch(data) or b""


def _feed(line: bytes, data: list[bytes]) -> bytes | None:
    """Take one line; at an event boundary, return the event if it is terminal."""
    if not line:
        return _dispatch(data)
    if line.startswith(b"data:"):
        value = line[5:]
        data.append(value[1:] if value.startswith(b" ") else value)
    return None


def _dispatch(data: list[bytes]) -> bytes | None:
    if not data:
        return None
    event = b"\n".join(data)
    data.clear()
    if not any(marker in event for marker in _MARKERS):
        return None
    try:
        parsed = orjson.loads(event)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and parsed.get("type") in TERMINAL_TYPES:
        return event
    return None
