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

from genai_coroutines import DocumentProcessor
from genai_coroutines.emulator import Emulator
from tests import samples
from tests.documents_support import config_for
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


async def test_datalab_concurrency_429s_cost_no_document(emulator: Emulator) -> None:
    """Datalab allows 3 jobs at once and the batch sends 8: its 429s wait their turn and
    spend no retry, so even with max_retries=0 every document is converted once."""
    emulator.config.datalab_max_concurrent = 3
    emulator.config.seconds_per_page = 0.05
    documents = [samples.pdf(1, tag=str(i)) for i in range(12)]
    results = await DocumentProcessor(
        config_for(emulator, max_concurrent_requests=8, max_retries=0)
    ).process_multiparts(documents)

    assert all(r["success"] for r in results)
    assert emulator.stats.rate_limited > 0
    assert emulator.stats.snapshot()["duplicate_submissions"] == 0
