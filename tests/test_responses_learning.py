"""Learning the rate limits from the first reply without stalling the batch behind it."""

from __future__ import annotations

from responses_support import run

from genai_coroutines.emulator import Emulator


async def test_batch_starts_when_the_probe_headers_arrive_not_its_body(
    emulator: Emulator,
) -> None:
    emulator.config.stream_chunk_delay = 0.02  # every streamed answer takes a while to finish
    prompts = [f"tell me a long story number {i} " * 20 for i in range(6)]

    results = await run(emulator, prompts, stream=True, max_concurrent_requests=6)

    assert results["total_success"] == 6
    # The probe's headers told the limits, so the other five went out while its body
    # was still streaming: all six were in flight together.
    assert emulator.stats.peak_in_flight == 6


async def test_limits_are_learned_before_a_second_request_is_sent(emulator: Emulator) -> None:
    emulator.config.openai_rpm = 600
    emulator.config.burst_seconds = 0.5  # 5 requests banked, then 10 per second

    results = await run(emulator, [f"q{i}" for i in range(12)], max_concurrent_requests=12)

    assert results["total_success"] == 12
    assert emulator.stats.rate_limited == 0, "requests went out before the limits were known"
