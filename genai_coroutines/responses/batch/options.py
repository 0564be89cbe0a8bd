"""`BatchAPI`: how the Batch API path runs, checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass

from ... import validation as check
from ...params import json_text, max_wait_param, param
from ..request import check_metadata

MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 199_000_000
"""Just under the API's 200 MB per input file (whether it means 10**6 or 2**20 bytes)."""
CREATIONS_PER_HOUR = 2_000
"""The Batch API's limit on batches created per hour (per organisation)."""
COMPLETION_WINDOWS = ("24h",)
FLUSH_IDLE_SECS = 30.0
FLUSH_MAX_WAIT_SECS = 600.0


@dataclass(frozen=True, kw_only=True)
class BatchAPI:
    """How the Batch API path runs (`process_batch(request, batch_api=BatchAPI(...))`).

    Files are cut at `max_requests_per_file` lines, `max_bytes_per_file` bytes and, when
    `max_enqueued_tokens` is set, that many estimated input tokens, and go out at the
    input's end; a file whose lines come slowly (a pipeline's documents finishing their
    OCR, lines coming after the input ended) goes out partly filled once no line came for
    `flush_idle_secs`, or `flush_max_wait_secs` after its first line. With
    `max_enqueued_tokens` set, a file
    goes out only when the estimated input tokens of the unfinished batches leave room
    for it (the next file when an earlier batch ends), as the API's per-model enqueued
    token limit would otherwise fail the batch. `max_batches_per_hour` is counted with the
    key's other limits, so every process sharing a limits store shares it. On Ctrl-C the
    batches still running are left running (a rerun with the same journal collects them)
    unless the request says `cancel_on_interrupt`.
    """

    poll_interval_secs: float = param(
        60.0, "seconds between polls of each batch", flag="--batch-poll-interval"
    )
    max_wait_secs: float | None = max_wait_param(
        None, "each batch (None: until its completion window ends it)", flag="--batch-max-wait"
    )
    completion_window: str = param(
        "24h", "the batches' completion window", flag="--batch-completion-window"
    )
    max_requests_per_file: int = param(
        MAX_REQUESTS_PER_FILE,
        "most requests in one batch file",
        flag="--batch-max-requests-per-file",
    )
    max_bytes_per_file: int = param(
        MAX_BYTES_PER_FILE, "largest batch file, bytes", flag="--batch-max-bytes-per-file"
    )
    max_enqueued_tokens: int | None = param(
        None,
        "estimated input tokens the unfinished batches may hold (the model's enqueued limit)",
        flag="--batch-max-enqueued-tokens",
    )
    max_batches_per_hour: int = param(
        CREATIONS_PER_HOUR,
        "batches created in any hour on the key, across the processes sharing the limits "
        "store (the API's limit)",
        flag="--batch-max-per-hour",
    )
    flush_idle_secs: float = param(
        FLUSH_IDLE_SECS,
        "seconds without a new line after which a partly filled batch file is sent",
        flag="--batch-flush-idle",
    )
    flush_max_wait_secs: float = param(
        FLUSH_MAX_WAIT_SECS,
        "seconds after its first line at which a partly filled batch file is sent",
        flag="--batch-flush-max-wait",
    )
    fallback_margin_secs: float = param(
        600.0,
        "with a deadline: time kept beyond the synchronous path's estimate when switching "
        "to it (a cancelled batch may take 10 minutes to stop)",
        flag="--batch-fallback-margin",
    )
    metadata: dict[str, str] | None = param(
        None,
        'each batch\'s metadata, a JSON object, e.g. \'{"run": "nightly"}\'',
        convert=json_text,
        metavar="JSON",
        flag="--batch-metadata",
    )

    def __post_init__(self) -> None:
        check.number("poll_interval_secs", self.poll_interval_secs, positive=True)
        check.number("max_wait_secs", self.max_wait_secs, positive=True, optional=True)
        check.choice("completion_window", self.completion_window, COMPLETION_WINDOWS)
        check.integer("max_requests_per_file", self.max_requests_per_file, minimum=1)
        if self.max_requests_per_file > MAX_REQUESTS_PER_FILE:
            raise ValueError(
                f"max_requests_per_file is at most {MAX_REQUESTS_PER_FILE:,} (the API's limit), "
                f"not {self.max_requests_per_file:,}"
            )
        check.integer("max_bytes_per_file", self.max_bytes_per_file, minimum=1024)
        if self.max_bytes_per_file > MAX_BYTES_PER_FILE:
            raise ValueError(
                f"max_bytes_per_file is at most {MAX_BYTES_PER_FILE:,} (the API takes 200 MB), "
                f"not {self.max_bytes_per_file:,}"
            )
        check.integer("max_enqueued_tokens", self.max_enqueued_tokens, minimum=1, optional=True)
        check.integer("max_batches_per_hour", self.max_batches_per_hour, minimum=1)
        check.number("flush_idle_secs", self.flush_idle_secs, positive=True)
        check.number("flush_max_wait_secs", self.flush_max_wait_secs, positive=True)
        check.number("fallback_margin_secs", self.fallback_margin_secs)
        check_metadata(self.metadata)

    @classmethod
    def of(cls, value: object) -> BatchAPI | None:
        """`batch_api=` as given: True (the defaults), a `BatchAPI`, or False/None (not used)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        raise TypeError(f"batch_api must be True, False or a BatchAPI, not {type(value).__name__}")
