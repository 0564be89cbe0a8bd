"""The OpenAI Batch API behind the same `ResponsesRequest`: half the price for work that can wait.

    results = await ResponsesProcessor().process_batch(request, batch_api=True)
    results = await ResponsesProcessor().process_batch(request, batch_api=BatchAPI(...))

The same prompts, the same result dicts in the same order as the synchronous path,
each adding the `batch_id` and `custom_id` that answered it; the requests are sent as
JSONL lines whose `body` is exactly what the synchronous path would `POST /responses`
(its `DirectPath.prepare`, every translation included). `BatchAPIPath` is the adapter:
it admits items as the synchronous path does (`prepare`, `digest` and `failed` are
`DirectPath`'s) and runs them grouped behind the engine's driver (`engine.grouped`);
`batch_jobs.BatchJobs` writes the files, submits, polls and joins the answers.

A line is a success only with `response.status_code == 200` and a body that is a
finished response (`direct.answer`); anything else is a failure with its code, judged
by the synchronous path's rules (`errors.classify`). Retriable ones (a 5xx, a 429, a
line of an expired batch that never ran) go into a follow-up batch, up to
`max_retries` rounds; results say `attempts` (batches the item was sent in) and
`service_tier: "batch"`, which the summary prices at half.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from ... import validation as check
from ...engine import Admitted, Failure, Reply, Result, Success
from ...engine.grouped import GroupRun
from ...params import json_text, param
from ..direct import DirectPath, Prepared, answer
from ..errors import classify
from ..request import ResponsesRequest, _check_metadata
from ..results import Answer, error_result, logger, success_result

MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 199_000_000
"""Just under the API's 200 MB per input file (whether it means 10**6 or 2**20 bytes)."""
COMPLETION_WINDOWS = ("24h",)
ENDPOINT = "/v1/responses"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
RETRIABLE_LINE_CODES = frozenset({"batch_expired", "server_error", "rate_limit_exceeded"})
"""`error.code`s of a line without a response that a follow-up batch may still answer."""
NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


@dataclass(frozen=True, kw_only=True)
class BatchAPI:
    """How the Batch API path runs (`process_batch(request, batch_api=BatchAPI(...))`).

    Files are cut at `max_requests_per_file` lines, `max_bytes_per_file` bytes and, when
    `max_enqueued_tokens` is set, that many estimated input tokens; with it set, a file
    goes out only when the estimated input tokens of the unfinished batches leave room
    for it (the next file when an earlier batch ends), as the API's per-model enqueued
    token limit would otherwise fail the batch. `cancel_on_interrupt`: on Ctrl-C, cancel
    the batches still running (default: leave them running; a rerun with the same
    journal collects them).
    """

    poll_interval_secs: float = param(
        60.0, "seconds between polls of each batch", flag="--batch-poll-interval"
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
    metadata: dict[str, str] | None = param(
        None,
        'each batch\'s metadata, a JSON object, e.g. \'{"run": "nightly"}\'',
        convert=json_text,
        metavar="JSON",
        flag="--batch-metadata",
    )
    cancel_on_interrupt: bool = param(
        False,
        "on Ctrl-C cancel the batches (default: leave them running, resume collects them); "
        "the CLI's --cancel-on-interrupt (`ResponsesRequest.cancel_on_interrupt` does the same)",
        cli=False,
    )

    def __post_init__(self) -> None:
        check.number("poll_interval_secs", self.poll_interval_secs, positive=True)
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
        _check_metadata(self.metadata)
        check.flag("cancel_on_interrupt", self.cancel_on_interrupt)

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


def custom_id(index: int, body: bytes) -> str:
    """Unique per item (its index) and stable across reruns of the same request (its body)."""
    return f"{index}-{hashlib.sha256(body).hexdigest()[:12]}"


_LINE_ID = re.compile(r"(0|[1-9][0-9]{0,17})-[0-9a-f]{12}")
"""What `custom_id` writes (ASCII digits only: `str.isdigit` also takes `²`, which `int`
refuses, and `int` refuses more than 4,300 digits)."""


def index_of(line_id: str) -> int | None:
    """The index in a custom_id `custom_id` wrote; None for any other."""
    match = _LINE_ID.fullmatch(line_id)
    return int(match[1]) if match else None


def batch_line(line_id: str, body: bytes) -> bytes:
    """One JSONL request line; `body` is already the JSON the synchronous path sends."""
    return (
        b'{"custom_id":'
        + orjson.dumps(line_id)
        + b',"method":"POST","url":"'
        + ENDPOINT.encode()
        + b'","body":'
        + body
        + b"}\n"
    )


def judge(line: dict[str, Any], api_key: str) -> Success[Answer] | Failure:
    """What one output or error line says: a usable answer, or why there is none."""
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict):
        status, body = response.get("status_code"), response.get("body")
        raw = b"" if body is None else orjson.dumps(body)
        if status == 200:
            return answer(Reply(200, NO_HEADERS, raw))
        if isinstance(status, int) and not isinstance(status, bool) and status >= 100:
            return classify(status, NO_HEADERS, raw, api_key)
        return Failure(
            f"the line came back with status_code {status!r} and no answer",
            "server_error",
            retriable=True,
        )
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") or "no message"
        if code == "batch_expired":
            message = f"never ran: {message}"
        return Failure(
            f"{code or 'error'}: {message}",
            "job_failed",
            retriable=code in RETRIABLE_LINE_CODES,
            code=code,
        )
    return Failure("the line holds neither a response nor an error", "invalid_response", True)


def with_batch(result: Result, batch_id: str | None, line_id: str | None) -> Result:
    result["batch_id"] = batch_id
    result["custom_id"] = line_id
    return result


class BatchAPIPath:
    """The `engine.grouped.GroupedAdapter` of the Batch API path (see the module docstring)."""

    kind = DirectPath.kind
    """The synchronous path's: the same request journals the same digest, so a result
    either path finished is reused by the other."""
    unit = "prompt"
    logger: logging.Logger = logger

    def __init__(self, request: ResponsesRequest, options: BatchAPI, direct: DirectPath) -> None:
        if request.stream:
            raise ValueError("stream=True cannot be used with batch_api: a batch answers whole")
        self.request = request
        self.options = options
        self.direct = direct
        self.model = request.model

    async def prepare(self, index: int, prompt: Any) -> Prepared | Failure:
        return await self.direct.prepare(index, prompt)

    def digest(self, prepared: Prepared) -> tuple[bytes, ...]:
        return self.direct.digest(prepared)

    def input_tokens(self, prepared: Prepared) -> int:
        """Estimated input tokens (what the API's enqueued-token limit counts)."""
        return max(1, prepared.estimate - self.direct.template.max_output)

    def failed(self, index: int, failure: Failure, started: float) -> Result:
        return with_batch(self.direct.failed(index, failure, started), None, None)

    def succeeded(
        self,
        index: int,
        outcome: Answer,
        *,
        attempts: int,
        started: float,
        batch_id: str,
        line: str,
    ) -> Result:
        result = success_result(
            index, outcome, model=self.model, attempts=attempts, rate_limited=0, started=started
        )
        result["service_tier"] = "batch"  # what the summary prices at half
        return with_batch(result, batch_id, line)

    def errored(
        self,
        index: int,
        failure: Failure,
        *,
        attempts: int,
        started: float,
        batch_id: str | None,
        line: str,
    ) -> Result:
        result = error_result(index, failure, model=self.model, attempts=attempts, started=started)
        return with_batch(result, batch_id, line)

    def run(self, run: GroupRun, items: AsyncIterator[Admitted[Prepared]]) -> AsyncIterator[Result]:
        from .jobs import BatchJobs

        return BatchJobs(self, run).results(items)
