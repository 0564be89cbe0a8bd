"""Plain rate limiting never costs an item (issue: a 429 spent the item's retries).

The emulator charges like the provider: each request's input plus an output allowance
it reserves for a request without `max_output_tokens`, at admission, never refunded;
the client is told neither the allowance nor the limits (they come from headers). A
429 naming its wait is the scheduler's business: items wait it out without spending
`max_retries`, the limiter learns the allowance from the first token 429s ("Requested
N"), and the storm does not repeat.
"""

from __future__ import annotations

import pytest

from genai_coroutines.emulator import Emulator
from tests.responses_support import run


@pytest.mark.parametrize("concurrency", [20, 100])
async def test_an_unknown_output_allowance_costs_no_item(
    emulator: Emulator, concurrency: int
) -> None:
    emulator.config.token_accounting = "provider"
    emulator.config.default_output_tokens = 1000
    emulator.config.openai_tpm = 1_500_000  # 25,000 a second: about 25 requests
    emulator.config.burst_seconds = 1.0
    prompts = [f"prompt {i} " + "word " * 40 for i in range(120)]
    results = await run(emulator, prompts, max_concurrent_requests=concurrency, max_retries=1)

    assert results["total_success"] == 120
    sent = emulator.stats.total("responses")
    print(f"c={concurrency}: {sent} sent, {emulator.stats.rate_limited} answered 429")
    assert emulator.stats.rate_limited <= concurrency  # the first wave at most, not every refill
