"""Helpers shared by the `test_responses_*` modules."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from genai_coroutines import ResponsesProcessor, ResponsesRequest
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine import Failure, Reply
from genai_coroutines.responses import direct

TEXT = {"type": "text"}


def request(**options: Any) -> ResponsesRequest:
    """A valid request aimed at no server, for what is checked at construction."""
    settings: dict[str, Any] = {
        "api_key": "sk-test-secret-0123456789",
        "model": "gpt-4o-mini",
        "system_prompt": "You are terse.",
        "user_prompts": ["hello"],
        "response_format": TEXT,
    }
    settings.update(options)
    return ResponsesRequest(**settings)


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
    real_send = direct.send

    async def timed_send(*args: Any, **kwargs: Any) -> Reply | Failure:
        started = time.monotonic()
        reply = await real_send(*args, **kwargs)
        status = reply.status if isinstance(reply, Reply) else None
        headers = dict(reply.headers) if isinstance(reply, Reply) else {}
        log.append(Attempt(started, time.monotonic(), status, headers))
        return reply

    monkeypatch.setattr(direct, "send", timed_send)
    return log
