"""Every failure class: what is retried, how often, how long it waits, and what is left.

One test per status or fault, each asserting the attempt count and the final fields.
Retry delays are a millisecond (`retry_delay_min_ms=1`) unless the wait is the point.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.openai_output import STREAM_FAILURE
from tests.responses_support import record_attempts, run
from tests.server_support import Server

RETRIED = [
    # (fault kind, final status, error_type, a phrase of the error message)
    ("500", 500, "server_error", "500 Internal Server Error: The server had an error"),
    ("502", 502, "server_error", "502 Bad Gateway: 502 Bad Gateway"),
    ("503", 503, "server_error", "503 Service Unavailable"),
    ("504", 504, "server_error", "504 Gateway Timeout"),
    ("520", 520, "server_error", "520 Error"),
    ("408", 408, "timeout", "408 Request Timeout"),
    ("409", 409, "conflict_error", "409 Conflict"),
    ("reset", None, "connection_error", ""),
    ("malformed", 200, "invalid_response", "not a complete response"),
    ("stall", None, "timeout", "timed out after 0.15s"),
    ("hang", None, "timeout", "timed out after 0.15s"),
]


@pytest.mark.parametrize(("kind", "status", "error_type", "message"), RETRIED)
async def test_retried_failure_recovers_then_exhausts(
    emulator: Emulator, kind: str, status: int | None, error_type: str, message: str
) -> None:
    emulator.config.hang_seconds = 0.3  # beyond the timeout, and over by teardown
    timeout = 0.15 if kind in ("stall", "hang") else 10.0  # short only where it is the fault
    emulator.faults.schedule("responses", kind, times=2)
    [ok] = (await run(emulator, ["hi"], max_retries=2, timeout_secs=timeout))["results"]
    assert ok["success"] and ok["attempts"] == 3 and ok["status"] == 200
    assert (
        emulator.stats.completed_by_digest and sum(emulator.stats.completed_by_digest.values()) == 1
    )

    emulator.faults.schedule("responses", kind, times=3)
    [failed] = (await run(emulator, ["hi"], max_retries=2, timeout_secs=timeout))["results"]
    assert failed["success"] is False
    assert failed["attempts"] == 3
    assert failed["is_retriable"] is True
    assert failed["status"] == status
    assert failed["error_type"] == error_type
    assert message in failed["error"]


async def test_a_429_spends_no_retry_but_its_waits_are_bounded(emulator: Emulator) -> None:
    """Three 429s with max_retries=2: waiting for quota is not the item failing, so it
    still succeeds; with the rate-limit wait bounded, a key that stays limited ends it."""
    emulator.faults.schedule("responses", "429", times=3)
    [ok] = (await run(emulator, ["hi"], max_retries=2))["results"]
    assert ok["success"] and ok["attempts"] == 4 and ok["rate_limited"] == 3

    emulator.faults.schedule("responses", "429", times=100)
    [failed] = (await run(emulator, ["hi"], max_retries=2, max_rate_limit_wait_secs=0.05))[
        "results"
    ]
    assert failed["success"] is False and failed["error_type"] == "rate_limit_error"
    assert failed["is_retriable"] is True and "429 Too Many Requests" in failed["error"]


NOT_RETRIED = [
    ("400", "invalid_request_error"),
    ("401", "authentication_error"),
    ("403", "permission_error"),
    ("404", "not_found_error"),
    ("422", "unprocessable_entity_error"),
]


@pytest.mark.parametrize(("status", "error_type"), NOT_RETRIED)
async def test_client_errors_are_not_retried(
    emulator: Emulator, status: str, error_type: str
) -> None:
    emulator.faults.schedule("responses", status, times=3)
    [failed] = (await run(emulator, ["hi"], max_retries=3))["results"]
    assert failed["attempts"] == 1 and emulator.stats.total("responses") == 1
    assert failed["is_retriable"] is False
    assert failed["status"] == int(status) and failed["error_type"] == error_type


async def test_a_real_400_carries_param_and_code(emulator: Emulator) -> None:
    [failed] = (await run(emulator, ["hi"], previous_response_id="resp_nope"))["results"]
    assert failed["attempts"] == 1 and failed["is_retriable"] is False
    assert failed["param"] == "previous_response_id"
    assert failed["code"] == "previous_response_not_found"
    assert failed["error"].startswith("400 Bad Request: Previous response with id")


async def test_bad_key_dooms_the_batch_after_one_request(emulator: Emulator) -> None:
    """The first request goes out alone (the limits are learned from it) and the others
    wait until it is judged, also when its error body arrives after its headers."""
    emulator.config.openai_split_body_seconds = 0.05
    wrong = "sk-wrong-key-1234567890abcdefghij"
    results = await run(emulator, [f"p{i}" for i in range(20)], api_key=wrong)
    assert results["total_errors"] == 20 and results["total_success"] == 0
    assert emulator.stats.total("responses") == 1  # the other 19 never went out
    attempts = sorted(r["attempts"] for r in results["results"])
    assert attempts == [0] * 19 + [1]
    for result in results["results"]:
        assert result["error_type"] == "authentication_error"
        assert result["code"] == "invalid_api_key" and result["is_retriable"] is False
        assert result["error"].startswith("401 Unauthorized: Incorrect API key provided")
        assert wrong not in result["error"] and wrong[:8] not in result["error"]


async def test_insufficient_quota_dooms_the_batch_and_is_not_retried(emulator: Emulator) -> None:
    emulator.config.insufficient_quota = True
    emulator.config.openai_split_body_seconds = 0.05  # the others wait for the body too
    results = await run(emulator, [f"p{i}" for i in range(10)], max_concurrent_requests=3)
    assert emulator.stats.total("responses") == 1
    assert sorted(r["attempts"] for r in results["results"]) == [0] * 9 + [1]
    for result in results["results"]:
        assert result["status"] == 429 and result["code"] == "insufficient_quota"
        assert result["error_type"] == "insufficient_quota" and result["is_retriable"] is False


async def test_doomed_batch_stops_items_waiting_to_retry(emulator: Emulator) -> None:
    """An item backing off from a 503 when a 401 arrives ends with the 401, unretried."""
    emulator.faults.schedule("responses", "503", times=1)  # the first request: backs off
    emulator.faults.schedule("responses", "401", times=1)  # the second dooms the batch
    slow = {"retry_delay_min_ms": 200, "retry_delay_max_ms": 200}
    results = await run(emulator, ["a", "b"], max_concurrent_requests=2, **slow)
    assert [r["status"] for r in results["results"]] == [401, 401]
    assert [r["attempts"] for r in results["results"]] == [1, 1]
    assert emulator.stats.total("responses") == 2


async def test_request_too_large_is_not_retried(emulator: Emulator) -> None:
    emulator.config.openai_tpm = 1000
    [failed] = (await run(emulator, ["hi"], max_output_tokens=5000))["results"]
    assert failed["attempts"] == 1 and failed["is_retriable"] is False
    assert failed["status"] == 429 and failed["code"] == "rate_limit_exceeded"
    assert failed["error_type"] == "request_too_large" and "Request too large" in failed["error"]


async def test_rate_limit_429_waits_its_retry_after(emulator: Emulator, monkeypatch: Any) -> None:
    emulator.config.openai_rpm = 300  # five a second...
    emulator.config.burst_seconds = 0.01  # ...with no burst: the second request gets a 429
    log = record_attempts(monkeypatch)
    results = await run(emulator, ["a", "b"], requests_per_minute=100_000)
    assert results["total_success"] == 2 and emulator.stats.rate_limited >= 1
    limited = next(a for a in log if a.status == 429)
    wait = float(limited.headers["retry-after-ms"]) / 1000
    assert wait > 0.1
    retry = next(a for a in log if a.started > limited.ended)
    assert retry.started - limited.ended >= wait
    assert max(r["attempts"] for r in results["results"]) == 2


async def test_retry_after_on_a_503_is_honoured(emulator: Emulator, monkeypatch: Any) -> None:
    emulator.config.fault_retry_after = 0.4
    emulator.faults.schedule("responses", "503-retry-after")
    log = record_attempts(monkeypatch)
    [result] = (await run(emulator, ["hi"]))["results"]
    assert result["success"] and result["attempts"] == 2
    refused, retried = log
    assert refused.status == 503 and retried.started - refused.ended >= 0.4


async def test_retry_after_beyond_the_ceiling_ends_the_item(emulator: Emulator) -> None:
    emulator.config.fault_retry_after = 3600
    emulator.faults.schedule("responses", "503-retry-after")
    started = time.monotonic()
    [result] = (await run(emulator, ["hi"], max_retry_wait_secs=5))["results"]
    assert time.monotonic() - started < 2
    assert result["attempts"] == 1 and result["is_retriable"] is True and result["status"] == 503
    assert emulator.stats.total("responses") == 1


@pytest.mark.parametrize(
    ("kind", "attempts"),
    [("400-should-retry", 3), ("503-no-retry", 1), ("429-no-retry", 1)],
)
async def test_x_should_retry_wins(emulator: Emulator, kind: str, attempts: int) -> None:
    emulator.faults.schedule("responses", kind, times=3)
    [result] = (await run(emulator, ["hi"], max_retries=2))["results"]
    assert result["attempts"] == attempts == emulator.stats.total("responses")
    assert result["is_retriable"] is kind.endswith("should-retry")


async def test_stream_errors_failures_and_cut_streams_are_retried(emulator: Emulator) -> None:
    for kind in ("stream-error", "stream-failed", "stream-cut"):  # server_error: retriable
        emulator.faults.schedule("responses", kind)
    [result] = (await run(emulator, ["hi"], stream=True, max_retries=3))["results"]
    assert result["success"] and result["attempts"] == 4
    output = orjson.loads(result["raw_response"])["output"]
    assert output[0]["content"][0]["text"] == 'Emulated answer to "hi".'
    assert sum(emulator.stats.faults.values()) == 3


async def test_failed_stream_with_a_client_error_code_is_not_retried(emulator: Emulator) -> None:
    emulator.config.fault_error_code = "invalid_image"
    emulator.faults.schedule("responses", "stream-failed", times=2)
    [result] = (await run(emulator, ["hi"], stream=True))["results"]
    assert result["attempts"] == 1 and result["code"] == "invalid_image"
    assert result["is_retriable"] is False
    assert result["error"] == f"Response failed: {STREAM_FAILURE}"


async def test_refused_connection_is_retried_then_reported() -> None:
    async with Emulator() as gone:
        pass  # its port is closed again: nothing listens there now
    [result] = (await run(gone, ["hi"], max_retries=2))["results"]
    assert result["attempts"] == 3 and result["error_type"] == "connection_error"
    assert result["status"] is None and result["is_retriable"] is True


async def test_a_429_asking_for_too_long_ends_its_item_without_freezing_the_batch(
    emulator: Emulator,
) -> None:
    emulator.config.fault_retry_after = 3600
    emulator.faults.schedule("responses", "429-retry-after")
    started = time.monotonic()
    batch = run(emulator, ["a", "b", "c"], max_concurrent_requests=1, max_retry_wait_secs=5)
    results = await asyncio.wait_for(batch, timeout=5)
    assert time.monotonic() - started < 2
    first, *rest = results["results"]
    assert first["status"] == 429 and first["attempts"] == 1 and first["is_retriable"] is True
    assert all(result["success"] for result in rest)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "upstream failed", "type": "server_error", "code": "server_error"}},
        {"object": "response", "id": "resp_1", "status": "in_progress", "output": []},
        {"object": "response", "id": "resp_2", "status": "queued", "output": []},
    ],
)
async def test_a_200_that_is_not_a_finished_response_is_not_a_success(
    servers: tuple[Server, Server], emulator: Emulator, body: dict[str, Any]
) -> None:
    api, _ = servers

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body)

    await api.start([("POST", "/v1/responses", answer)])
    [result] = (await run(emulator, ["hi"], base_url=f"{api.url}/v1", max_retries=1))["results"]
    assert result["success"] is False
    assert result["error_type"] in ("server_error", "invalid_response")
