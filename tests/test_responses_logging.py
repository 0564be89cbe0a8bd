"""Logs: the events the seed documents, as `key=value`; never a key, never prompt text at INFO."""

from __future__ import annotations

import logging

import pytest

from genai_coroutines.emulator import Emulator
from tests.responses_support import run

SECRET_PROMPT = "my confidential prompt text"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


async def test_batch_events_are_logged_as_key_value(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genai_coroutines.responses")
    emulator.faults.schedule("responses", "503")
    emulator.faults.schedule("responses", "429")
    emulator.faults.schedule("responses", "400")
    await run(emulator, [SECRET_PROMPT, "b", "c"], max_concurrent_requests=1)
    text = logged(caplog)
    assert "batch_start | model=gpt-4o-mini prompts=3 concurrency=1 stream=False" in text
    assert "retry | index=0 retry=1/5 reason=server_error status=503 delay=" in text
    assert "rate_limit | index=0 retry=1/5 reason=rate_limit_error status=429" in text
    assert (
        "task_failed | index=0 error_type=invalid_request_error status=400 code=None attempts=3"
        in text
    )
    assert "batch_done | ok=2 errors=1 retries=2 rate_limited=1 secs=" in text
    assert all(r.name == "genai_coroutines.responses" for r in caplog.records)
    assert SECRET_PROMPT not in text


async def test_the_key_is_never_in_logs_errors_or_repr(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-proj-WRONGkey0123456789abcdefghijklmnopqrstuv"
    results = await run(emulator, ["a", "b"], api_key=wrong)
    good = await run(emulator, ["c"])
    everything = logged(caplog) + repr(results) + repr(good)
    for key in (wrong, emulator.config.openai_api_key):
        assert key not in everything
    assert wrong[:8] not in repr(results)  # not even OpenAI's masked echo of it
    assert "[redacted]" in results["results"][0]["error"]
