"""What a batch will cost and how long it will take, before anything is sent.

`estimate` reads the prompts, counts their input tokens and prices them on each path (the
synchronous one, flex, the Batch API) at the processor's prices, with and without prompt
caching. Input tokens are counted with `tiktoken` (the `[estimate]` extra) when its encoding
for the model can be loaded: tiktoken downloads its encodings on first use and caches them
(`TIKTOKEN_CACHE_DIR`), so on a machine without network access and without a cached encoding
the count falls back to the approximation the rate limiter uses (four characters a token,
`wire.estimate_tokens`); the result says which counted. Output tokens are assumed to be
`max_output_tokens` each (or `DEFAULT_OUTPUT_ALLOWANCE` when unset: a ceiling, not a
forecast). With prompt caching, the instructions are assumed served from cache on every
request but each planned key's first (`prompt_cache_key="auto"`: one key per 15 requests
a minute), in 128-token steps from 1,024 tokens, as OpenAI caches.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .cache_keys import PER_KEY_MINUTE
from .prices import (
    DEFAULT_OUTPUT_ALLOWANCE,
    Price,
    PriceTable,
    price_for,
    tier_share,
    token_cost,
)
from .request import ResponsesRequest
from .wire import estimate_tokens

CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128
"""OpenAI caches prompts of 1,024 tokens or more, in steps of 128 tokens."""
APPROXIMATION = "approximation: 4 characters a token"


@functools.cache
def token_counter(model: str) -> tuple[str, Callable[[str], int] | None]:
    """tiktoken's encoding for `model` (o200k_base for a model it does not know) and its
    name; (APPROXIMATION, None) when tiktoken is not installed or cannot load the encoding
    (offline, nothing cached). Tried once per model and process."""
    try:
        import tiktoken
    except ImportError:
        return APPROXIMATION, None
    try:
        try:
            encoding = tiktoken.encoding_for_model(model)
        except KeyError:
            encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # its download failed: no network, no cached file
        return APPROXIMATION, None
    return f"tiktoken {encoding.name}", lambda text: len(encoding.encode(text))


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()


def cached_share(instructions: int) -> int:
    """Tokens of instructions this long a cache hit serves."""
    return instructions // CACHE_STEP * CACHE_STEP if instructions >= CACHE_MIN_TOKENS else 0


def estimate(
    request: ResponsesRequest, prices: PriceTable, limits: dict[str, float | None]
) -> dict[str, Any]:
    """The estimate of `request` (see the module docstring); `limits` are the key's
    requests and tokens per minute (None: unknown, so no minutes)."""
    prompts = request.user_prompts
    if not isinstance(prompts, Iterable):
        raise TypeError("estimate needs prompts it can read now: a list or an iterable")
    template = request._template
    name, count = token_counter(request.model)
    instructions = count(request.system_prompt) if count else 0
    n = input_tokens = 0
    for prompt in prompts:
        n += 1
        sent = template.input_for(prompt)
        if count is None:
            input_tokens += estimate_tokens(template.fixed_chars, sent, 0)
        else:
            input_tokens += instructions + count(_text(sent))
    per_output = request.max_output_tokens or DEFAULT_OUTPUT_ALLOWANCE
    output_tokens = n * per_output
    if count is None:
        instructions = math.ceil(template.fixed_chars / 4)
    rpm, tpm = limits.get("requests_per_minute"), limits.get("tokens_per_minute")
    minutes = max(n / rpm if rpm else 0.0, (input_tokens + output_tokens) / tpm if tpm else 0.0)
    keys = math.ceil(min(n, rpm or n) / PER_KEY_MINUTE) if n else 0
    cached = (n - keys) * cached_share(instructions)
    price = price_for(request.model, prices.models)

    def path(share: float, timed: bool) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            **_costs(price, share, input_tokens, 0, output_tokens),
            "minutes": round(minutes, 2) if timed and (rpm or tpm) else None,
        }
        figures["with_prompt_caching"] = {
            "cached_input_tokens": cached,
            **_costs(price, share, input_tokens, cached, output_tokens),
        }
        return figures

    return {
        "model": request.model,
        "prompts": n,
        "tokenizer": name,
        "output_tokens_per_request": per_output,
        "output_assumed": "max_output_tokens"
        if request.max_output_tokens
        else f"default {DEFAULT_OUTPUT_ALLOWANCE} (no max_output_tokens)",
        "prices_date": prices.date,
        "priced": price is not None,
        "limits": {"requests_per_minute": rpm, "tokens_per_minute": tpm},
        "paths": {
            "sync": path(1.0, True),
            "flex": path(tier_share("flex", prices.tiers), True),
            "batch_api": path(tier_share("batch", prices.tiers), False),
        },
    }


def _costs(
    price: Price | None, share: float, inputs: int, cached: int, outputs: int
) -> dict[str, float | None]:
    """Input, output and total US dollars (None without a price: never a guess)."""
    if price is None:
        return {"input_cost_usd": None, "output_cost_usd": None, "cost_usd": None}
    paid_in = token_cost(inputs, cached, 0, price, share)
    paid_out = token_cost(0, 0, outputs, price, share)
    return {
        "input_cost_usd": round(paid_in, 9),
        "output_cost_usd": round(paid_out, 9),
        "cost_usd": round(paid_in + paid_out, 9),
    }
