"""Shared state of the emulator: its settings, its counters and its rate windows.

Both API emulations read one `EmulatorConfig` (tests may change fields while the
server runs) and record what they saw in one `Stats`, so a test can ask "how many
times was this file uploaded?" without caring which endpoint took it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from ..params import param, spec
from .fault_kinds import parse_fault, rates_from_faults


@dataclass
class EmulatorConfig:
    """Every knob of the emulator. All durations are seconds and may be fractional."""

    openai_api_key: str = param("sk-emulator", "the only Bearer key accepted")
    datalab_api_key: str = param("dl-emulator", "the only X-Api-Key accepted")
    seed: int = param(0, "seeds latency draws, random faults and failed jobs")

    # OpenAI side
    latency: float = param(0.0, "median /v1/responses latency, s (lognormal around it when > 0)")
    openai_transit_seconds: float = param(
        0.0,
        "how long a /v1/responses request travels before the rate limits count it, s: a "
        "reply's x-ratelimit-remaining-* misses what other clients sent that recently",
    )
    openai_rpm: int | None = param(None, "requests per minute (default: unlimited)")
    openai_tpm: int | None = param(None, "tokens per minute (default: unlimited)")
    burst_seconds: float = param(
        60.0, "unused quota a bucket may bank: 60 is a full minute, 1 lets the rate decide"
    )
    insufficient_quota: bool = param(False, "answer every request 429 insufficient_quota")
    stream_chunk_delay: float = param(0.0, "pause after each streamed delta, s")
    openai_split_body_seconds: float = param(
        0.0,
        "pause inside each non-streamed /v1/responses reply, s: its headers and first body "
        "byte are sent, the rest that much later (a proxy flushing as bytes arrive)",
    )

    # OpenAI async paths: token accounting, flex, background mode, Files and Batch APIs
    token_accounting: Literal["settle", "provider"] = param(
        "settle",
        "settle: charge the estimate at admission, correct it to the real usage afterwards; "
        "provider: charge input + max_output_tokens (or default_output_tokens), never refund, "
        "and a request refused 429 still counts against the RPM bucket",
    )
    default_output_tokens: int = param(
        16, "output allowance charged against the TPM bucket when max_output_tokens is unset"
    )
    flex_unavailable_rate: float = param(
        0.0, 'share of service_tier "flex" requests refused 429 Resource Unavailable (seeded)'
    )
    background_queue_seconds: float = param(
        0.05, "how long a background response stays queued before in_progress, s"
    )
    background_failure_rate: float = param(
        0.0, "share of background responses that end failed with a server_error (seeded)"
    )
    stored_response_ttl: float = param(
        3600.0, "seconds a stored response stays retrievable by GET /v1/responses/{id}"
    )
    prompt_caching: bool = param(
        False, "serve repeated prompt prefixes of 1024+ tokens from a cache (cached_tokens)"
    )
    prompt_cache_ttl: float = param(
        300.0, "seconds a cached prefix lives after its last use (in_memory retention)"
    )
    prompt_cache_extended_ttl: float = param(
        86400.0, 'the same for requests with prompt_cache_retention "24h"'
    )
    prompt_cache_rpm_per_key: int = param(
        15, "requests per rolling minute one cache machine (prefix + key) serves; beyond, a miss"
    )
    batch_validating_seconds: float = param(0.05, "how long a batch stays validating, s")
    batch_seconds_per_line: float = param(0.0, "batch processing time per line, s")
    batch_finalizing_seconds: float = param(0.05, "how long a batch stays finalizing, s")
    batch_cancelling_seconds: float = param(0.0, "how long a batch stays cancelling, s")
    batch_line_failure_rate: float = param(
        0.0, "share of batch lines that fail with a 500 server_error (seeded)"
    )
    batch_expire_after_lines: int | None = param(
        None, "after this many lines the batch goes expired; the rest end batch_expired"
    )
    batch_enqueued_token_limit: int | None = param(
        None, "per model: estimated input tokens of unfinished batches a new batch may join"
    )
    batch_max_requests: int = param(50_000, "most lines in one batch input file")
    batch_max_bytes: int = param(200 * 2**20, "largest batch input file, bytes")

    # Datalab side
    seconds_per_page: float = param(0.02, "Datalab processing time per page, s")
    datalab_rpm: int | None = param(None, "uploads per minute per key (default: unlimited)")
    datalab_max_concurrent: int | None = param(
        None, "jobs processing at once, 429 beyond (default: unlimited)"
    )
    datalab_max_pages_in_flight: int | None = param(
        None,
        "pages processing at once; beyond, the job fails (default: unlimited)",
        flag="--datalab-max-pages",
    )
    result_ttl: float = param(3600.0, "seconds a result stays pollable after its job ends")
    failed_job_rate: float = param(
        0.0, 'share of accepted jobs that end {"status": "failed"} (seeded)'
    )
    webhooks: bool = param(True, "POST Datalab's webhook body to webhook_url when a job ends")
    datalab_checkpoint_ttl: float = param(
        3600.0, "seconds a checkpoint (save_checkpoint) stays usable after its job ends"
    )
    datalab_lost_checkpoint: Literal["404", "failed"] = param(
        "404",
        "the answer to an unknown or expired checkpoint_id: 404 at submit, or an accepted "
        'job that ends {"status": "failed"}',
    )
    datalab_segment_pages: Literal["pages", "page_range"] = param(
        "pages",
        'how each segment names its pages: "pages": [0, 1] (Datalab\'s recipe) or '
        '"page_range": "0-1" (datalab-python-sdk\'s tests)',
    )
    datalab_upload_url_ttl: float = param(
        3600.0, "seconds a presigned upload URL accepts a PUT (then 403 Request has expired)"
    )
    datalab_refuse_references: list[str] = field(
        default_factory=list,
        metadata=spec(
            "an endpoint (marker, convert, extract, segment) answering a datalab:// file_url "
            "400, as for any non-http(s) URL (repeatable)",
            metavar="ENDPOINT",
        ),
    )
    datalab_credits_cents: float | None = param(
        None,
        "the account's credit, cents; a submit it cannot cover gets 403 (default: unlimited)",
    )
    datalab_polls_need_credits: bool = param(
        False, "once a submit was refused for credits, polls get the same 403 too"
    )
    datalab_check_origin: str | None = param(
        None,
        "answer request_check_url on this origin (scheme://host:port), not the emulator's: "
        "a server sending the client's polls, and its key, elsewhere",
        metavar="URL",
    )

    # Faults: endpoint name -> {fault kind -> probability}. See `fault_kinds.FAULT_KINDS`.
    fault_rates: dict[str, dict[str, float]] = field(
        default_factory=dict,
        metadata=spec(
            "e.g. responses:503:0.05 (repeatable); "
            "KIND: any NNN or a name of fault_kinds.FAULT_KINDS",
            flag="--fault",
            type=parse_fault,
            action="append",
            convert=rates_from_faults,
            metavar="ENDPOINT:KIND:RATE",
        ),
    )
    hang_seconds: float = param(3600.0, "how long hang and stall faults hold the request, s")
    slow_seconds: float = param(0.5, "how late a slow fault answers, s")
    fault_retry_after: float = param(
        1.0, "seconds an NNN-retry-after fault asks to wait (retry-after is rounded up)"
    )
    fault_error_code: str = param(
        "server_error",
        'the code of stream-error/stream-failed faults ("invalid_image": not retriable)',
    )


EVENTS_KEPT = 10_000
"""How many `Stats.events` are kept (the oldest are dropped first)."""


def digest(data: bytes) -> str:
    """Short content digest used to key per-input counters."""
    return hashlib.sha256(data).hexdigest()[:16]


class Stats:
    """Counters a test or benchmark reads to prove what crossed the wire."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        """`"<endpoint> <status>"` -> count, e.g. `"responses 200"`."""
        self.rate_limited = 0
        self.faults: Counter[str] = Counter()
        """`"<endpoint> <fault>"` -> count."""
        self.submissions_by_digest: Counter[str] = Counter()
        """Datalab: accepted uploads per file digest (or per `file_url`; a `datalab://`
        reference counts under its stored bytes' digest)."""
        self.submissions_by_endpoint: dict[str, Counter[str]] = {}
        """Datalab: endpoint ("marker", "convert", "extract") -> digest -> accepted jobs."""
        self.events: deque[tuple[float, str, str]] = deque(maxlen=EVENTS_KEPT)
        """(`time.monotonic()`, endpoint, what) per request, oldest first, the last
        `EVENTS_KEPT`: e.g. `(t, "convert", "submitted <request_id>")`, or
        `(t, "responses", "request <digest of its input>")` as a response request arrives."""
        self.responses_by_digest: Counter[str] = Counter()
        """OpenAI: requests per digest of their `input`, whatever the answer."""
        self.completed_by_digest: Counter[str] = Counter()
        """OpenAI: 200 answers per digest of their `input` (a second one means paid twice)."""
        self.received: list[dict[str, Any]] = []
        """The last request bodies/forms seen, newest last (kept short); the snapshot's
        `client_connections` counts the distinct client addresses (`peer`) among them."""
        self.in_flight = 0
        self.peak_in_flight = 0
        self.webhooks_sent = 0
        self.tokens_charged = 0
        """OpenAI: tokens the TPM bucket was charged for admitted requests, net of refunds
        (what a benchmark's lower bound divides by the limit)."""
        # OpenAI async paths
        self.files_uploaded = 0
        self.files_by_digest: Counter[str] = Counter()
        """OpenAI Files: uploads stored per digest of their bytes (a second one means the
        same file was uploaded twice)."""
        self.batches_created = 0
        self.batch_executions_by_custom_id: Counter[str] = Counter()
        """Batch lines run per `custom_id`, across batches (a second one means it ran twice)."""
        self.flex_unavailable = 0
        self.billed_tokens: Counter[str] = Counter()
        """OpenAI: "input" and "output" tokens of every answer completed (synchronous,
        background, Batch API line): what the account would be billed; "input" splits into
        "cached_input" (its `cached_tokens`) and "uncached_input"."""
        self.prompt_cache_lookups: Counter[str] = Counter()
        """OpenAI, with `prompt_caching` on: answered prompts of 1024+ tokens by what the
        cache did, "hit", "miss" or "spill" (beyond the machine's per-minute share)."""
        self.pages_processed = 0
        """Datalab: pages of every job accepted for processing."""
        self.parses_by_digest: Counter[str] = Counter()
        """Datalab: jobs that parsed (OCR'd) a document, per document digest; a job from a
        checkpoint parses nothing."""
        self.checkpoint_reads_by_digest: Counter[str] = Counter()
        """Datalab: jobs that read a checkpoint instead, per digest of its document."""
        self.cents_billed: defaultdict[str, float] = defaultdict(float)
        """Datalab: cents billed per endpoint ("convert", "extract", ...), summed over the
        `cost_breakdown` of every job that completes."""
        self.storage_puts_by_digest: Counter[str] = Counter()
        """Datalab presigned uploads: PUTs accepted by the storage URL, per digest of the bytes."""
        self.storage_bytes = 0
        """Datalab presigned uploads: bytes of every PUT accepted."""
        self.storage_key_leaks = 0
        """PUTs to the storage URL that carried an `X-Api-Key` or `Authorization` header: the
        key sent to a host that must never see it."""
        self.references_used: Counter[str] = Counter()
        """Datalab: accepted jobs per `datalab://file-N` reference they read."""

    def remember(self, item: dict[str, Any], keep: int = 1000) -> None:
        self.received.append(item)
        if len(self.received) > keep:
            del self.received[: len(self.received) - keep]

    def bill(self, usage: dict[str, Any]) -> None:
        """Count an answer's usage as billed: cached input bills at a discount, so it is
        counted apart from the uncached rest."""
        cached = usage["input_tokens_details"]["cached_tokens"]
        self.billed_tokens["input"] += usage["input_tokens"]
        self.billed_tokens["cached_input"] += cached
        self.billed_tokens["uncached_input"] += usage["input_tokens"] - cached
        self.billed_tokens["output"] += usage["output_tokens"]

    def log(self, endpoint: str, what: str) -> None:
        """Add to `events`, stamped now, so a test can prove what happened in which order."""
        self.events.append((time.monotonic(), endpoint, what))

    def count(self, endpoint: str, status: int) -> None:
        self.requests[f"{endpoint} {status}"] += 1
        if status == 429:
            self.rate_limited += 1

    def total(self, endpoint: str) -> int:
        return sum(n for key, n in self.requests.items() if key.split(" ")[0] == endpoint)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "submissions_by_digest": dict(self.submissions_by_digest),
            "submissions_by_endpoint": {
                name: dict(counts) for name, counts in self.submissions_by_endpoint.items()
            },
            "duplicate_submissions": sum(
                n - 1 for n in self.submissions_by_digest.values() if n > 1
            ),
            "responses_by_digest": dict(self.responses_by_digest),
            "completed_by_digest": dict(self.completed_by_digest),
            "duplicate_completions": sum(n - 1 for n in self.completed_by_digest.values() if n > 1),
            "peak_in_flight": self.peak_in_flight,
            "webhooks_sent": self.webhooks_sent,
            "tokens_charged": self.tokens_charged,
            "client_connections": len({seen.get("peer") for seen in self.received} - {None}),
            "files_uploaded": self.files_uploaded,
            "files_by_digest": dict(self.files_by_digest),
            "batches_created": self.batches_created,
            "batch_executions_by_custom_id": dict(self.batch_executions_by_custom_id),
            "duplicate_batch_executions": sum(
                n - 1 for n in self.batch_executions_by_custom_id.values() if n > 1
            ),
            "flex_unavailable": self.flex_unavailable,
            "billed_tokens": dict(self.billed_tokens),
            "prompt_cache_lookups": dict(self.prompt_cache_lookups),
            "pages_processed": self.pages_processed,
            "parses_by_digest": dict(self.parses_by_digest),
            "checkpoint_reads_by_digest": dict(self.checkpoint_reads_by_digest),
            "cents_billed": dict(self.cents_billed),
            "storage_puts_by_digest": dict(self.storage_puts_by_digest),
            "storage_bytes": self.storage_bytes,
            "storage_key_leaks": self.storage_key_leaks,
            "references_used": dict(self.references_used),
        }


class RateWindow:
    """A token bucket refilled continuously at `per_minute / 60` per second.

    It holds at most `per_minute * burst_seconds / 60` units (never less than one
    request's worth), which is how OpenAI reports it: `remaining` is what the bucket
    holds now and `reset` is how long until it is full again.
    """

    def __init__(self, per_minute: int, burst_seconds: float = 60.0) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute * burst_seconds / 60.0)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float) -> float:
        """Take `amount` if the bucket holds it and return 0, else return the seconds to wait.
        An amount above the capacity needs a full bucket, then borrows (the level goes
        below zero), as it could otherwise never be taken."""
        self._refill()
        if min(amount, self.capacity) <= self.level:
            self.level -= amount
            return 0.0
        return (min(amount, self.capacity) - self.level) / self.rate

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    @property
    def remaining(self) -> int:
        self._refill()
        return max(0, math.floor(self.level))

    @property
    def reset_seconds(self) -> float:
        self._refill()
        return (self.capacity - self.level) / self.rate


def go_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers: "120ms", "1s", "6m0s", "1h2m3s"."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text
