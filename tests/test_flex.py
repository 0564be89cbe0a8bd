"""The flex tier done right: capacity 429s retried without pausing anyone, the fallback to
`service_tier: "auto"` after N of them, the 900 s timeout, and prices by the tier served.

The emulator refuses flex requests at `flex_unavailable_rate` (seeded) with OpenAI's 429
"Resource Unavailable", counted in `stats.flex_unavailable`, before any rate bucket; every
body it receives is in `stats.received` in arrival order. The figures of the 30% run are
printed (`-s` shows them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest

from genai_coroutines import BatchSummary, ResponsesProcessor
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.openai_api import FLEX_UNAVAILABLE
from genai_coroutines.engine import RateLimiter
from genai_coroutines.responses.direct import DirectAdapter
from genai_coroutines.responses.errors import classify
from tests.responses_support import request_for, sent_bodies
from tests.samples import ended

PROMPTS = [f"flex prompt {i}" for i in range(150)]


def _body(code: str | None, kind: str, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def test_a_flex_429_is_capacity_never_the_quota() -> None:
    flex = classify(
        429, {}, _body("resource_unavailable", "resource_unavailable", FLEX_UNAVAILABLE), "k"
    )
    assert flex.error_type == "capacity_unavailable" and flex.retriable
    assert not flex.rate_limited and not flex.dooms_batch  # pauses nobody, stops nothing
    worded = classify(429, {}, _body(None, "", "429 Resource Unavailable"), "k")
    assert worded.error_type == "capacity_unavailable"

    quota = classify(429, {}, _body("insufficient_quota", "insufficient_quota", "quota"), "k")
    assert quota.error_type == "insufficient_quota" and not quota.retriable
    limited = classify(
        429,
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"},
        _body("rate_limit_exceeded", "requests", "Rate limit reached for requests"),
        "k",
    )
    assert limited.error_type == "rate_limit_error" and limited.rate_limited


def _pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    paused: list[float] = []
    real = RateLimiter.pause

    async def pause(self: RateLimiter, seconds: float) -> None:
        paused.append(seconds)
        await real(self, seconds)

    monkeypatch.setattr(RateLimiter, "pause", pause)
    return paused


def _tiers_by_prompt(emulator: Emulator) -> dict[str, list[str]]:
    """The `service_tier` of every POST of each prompt, in the order the server got them."""
    tiers: dict[str, list[str]] = defaultdict(list)
    for body in sent_bodies(emulator):
        tiers[body["input"]].append(body.get("service_tier"))
    return tiers


async def _flex_run(emulator: Emulator, **options: Any) -> tuple[dict[str, Any], BatchSummary]:
    emulator.config.flex_unavailable_rate = 0.3
    summary = BatchSummary()
    request = request_for(emulator, PROMPTS, service_tier="flex", **options)
    out = await ResponsesProcessor().process_batch(request, summary=summary)
    return out, summary


async def test_30_percent_capacity_429s_every_item_succeeds_and_no_one_is_paused(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = _pauses(monkeypatch)
    out, summary = await _flex_run(emulator, max_retries=12)
    refused = emulator.stats.flex_unavailable
    print(
        f"\nflex at 30% unavailable, {len(PROMPTS)} prompts: {out['total_success']} succeeded, "
        f"{refused} capacity 429s ({refused / (refused + len(PROMPTS)):.0%} of "
        f"{refused + len(PROMPTS)} POSTs), {summary.retries} retries, "
        f"{summary.rate_limited} counted as rate limits, {len(paused)} pauses, "
        f"tiers {summary.tiers}, ${summary.cost_usd:.6f}"
    )
    assert out["total_success"] == len(PROMPTS)
    assert refused > 0.15 * len(PROMPTS)
    assert paused == [], "a capacity 429 paused the key's limiter"
    assert summary.rate_limited == 0 and all(r["rate_limited"] == 0 for r in out["results"])
    assert summary.retries == refused  # each capacity 429 is one counted retry
    assert summary.tiers == {"flex": len(PROMPTS)}
    for tiers in _tiers_by_prompt(emulator).values():
        assert set(tiers) == {"flex"}, "no fallback unless asked"
    # priced at flex rates, half the standard price of the same tokens
    standard = BatchSummary()
    for result in out["results"]:
        standard.add(ended(result["usage"], model=result["model"], tier="default"))
    assert summary.cost_usd == pytest.approx(standard.cost_usd / 2)


async def test_flex_fallback_after_2_sends_auto_only_after_two_capacity_429s(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = _pauses(monkeypatch)
    out, summary = await _flex_run(emulator, flex_fallback_after=2)
    assert out["total_success"] == len(PROMPTS) and paused == []
    fell_back = 0
    for prompt, tiers in _tiers_by_prompt(emulator).items():
        assert tiers[:2] == ["flex", "flex"][: len(tiers)], prompt
        assert set(tiers[2:]) <= {"auto"}, f"{prompt}: flex again after falling back"
        fell_back += len(tiers) > 2
    print(
        f"\nflex_fallback_after=2: {fell_back} of {len(PROMPTS)} fell back to auto, "
        f"tiers {summary.tiers}"
    )
    assert fell_back > 0
    assert summary.tiers == {"flex": len(PROMPTS) - fell_back, "default": fell_back}
    served = {r["index"]: r["service_tier"] for r in out["results"]}
    assert sum(tier == "default" for tier in served.values()) == fell_back


async def test_a_flex_request_waits_900_seconds_unless_told(emulator: Emulator) -> None:
    limiter: Any = None
    flex = request_for(emulator, ["x"], service_tier="flex")
    assert flex.timeout_secs == 60 and flex.attempt_timeout_secs == 900
    assert DirectAdapter(flex, limiter).timeout == 900
    told = request_for(emulator, ["x"], service_tier="flex", timeout_secs=60)
    assert DirectAdapter(told, limiter).timeout == 60
    plain = request_for(emulator, ["x"])
    assert DirectAdapter(plain, limiter).timeout == 60
