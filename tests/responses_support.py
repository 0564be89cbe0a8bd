"""Helpers shared by the `test_responses_*` modules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from genai_coroutines import ResponsesProcessor, ResponsesRequest
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine import Failure, Reply
from genai_coroutines.responses import processor

TEXT = {"type": "text"}


def request_for(emulator: Emulator, prompts: Any, **options: Any) -> ResponsesRequest:
    """A request aimed at the emulator, fast retries unless the test says otherwise."""
    settings: dict[str, Any] = {
        "api_key": emulator.config.openai_api_key,
        "base_url": emulator.openai_base_url,
        "model": "gpt-4o-mini",
        "system_prompt": "You are terse.",
        "user_prompts": prompts,
        "response_format": TEXT,
        "retry_delay_min_ms": 1,
        "retry_delay_max_ms": 5,
    }
    settings.update(options)
    return ResponsesRequest(**settings)


async def run(emulator: Emulator, prompts: Any, **options: Any) -> dict[str, Any]:
    return await ResponsesProcessor().process_batch(request_for(emulator, prompts, **options))


def sent_bodies(emulator: Emulator) -> list[Any]:
    return [seen["body"] for seen in emulator.stats.received if seen["endpoint"] == "responses"]


@dataclass
class Attempt:
    started: float
    ended: float
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)


def record_attempts(monkeypatch: pytest.MonkeyPatch) -> list[Attempt]:
    """Every attempt the processor makes from now on, timed on the client side, as they end."""
    log: list[Attempt] = []
    real_send = processor.send  # type: ignore[attr-defined]

    async def timed_send(*args: Any, **kwargs: Any) -> Reply | Failure:
        started = time.monotonic()
        reply = await real_send(*args, **kwargs)
        status = reply.status if isinstance(reply, Reply) else None
        headers = dict(reply.headers) if isinstance(reply, Reply) else {}
        log.append(Attempt(started, time.monotonic(), status, headers))
        return reply

    monkeypatch.setattr(processor, "send", timed_send)
    return log


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def tiny_server(handler: Handler) -> AsyncIterator[str]:
    """A one-route server on 127.0.0.1 for answers the emulator cannot be asked to give
    (x-should-retry, a Retry-After on a 503); yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/responses", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def minimal_response(text: str) -> dict[str, Any]:
    """The smallest Response object a real server could send back."""
    return {
        "id": "resp_tiny",
        "object": "response",
        "status": "completed",
        "output": [
            {
                "id": "msg_tiny",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
    }
