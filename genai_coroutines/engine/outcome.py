"""What an attempt comes to, and the one vocabulary of failure both APIs share.

Per-item failures are values, never exceptions: a `Failure` names its `error_type`
from `ErrorType`, one list for both APIs, with the same name for the same situation
(a 429 is `rate_limit_error` whether OpenAI or Datalab sent it). The names are the
OpenAI SDK's where it has one (`authentication_error`, `rate_limit_error`, ...), as
the Rust genai-coroutines README shows; the rest name what this library saw. Control flow branches
on these names, so a typo is a type error under mypy, not a silent mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar, get_args

T = TypeVar("T")

ErrorType = Literal[
    # HTTP answers, by status (see `ERROR_TYPE_BY_STATUS`)
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "conflict_error",
    "unprocessable_entity_error",
    "rate_limit_error",
    "file_too_large",
    "server_error",
    "api_error",
    # what a body said
    "insufficient_quota",
    "capacity_unavailable",
    "request_too_large",
    "invalid_response",
    "response_failed",
    "job_failed",
    "page_limit",
    # the transport
    "timeout",
    "connection_error",
    "redirect_refused",
    # before or around sending
    "invalid_input",
    "read_error",
    "poll_timeout",
    "budget_exceeded",
    "deadline_exceeded",
    "journal_error",
]
ERROR_TYPES: tuple[ErrorType, ...] = get_args(ErrorType)

ERROR_TYPE_BY_STATUS: dict[int, ErrorType] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    409: "conflict_error",
    413: "file_too_large",
    422: "unprocessable_entity_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> ErrorType:
    """The vocabulary's name for an HTTP error status."""
    return ERROR_TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "api_error")


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt did not succeed, in the terms the public result dicts use."""

    message: str
    error_type: ErrorType
    retriable: bool
    status: int | None = None
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    """Seconds the server asked for (Retry-After or a rate-limit reset), if it said."""
    dooms_batch: bool = False
    """True when every other item would fail the same way (bad key, no quota)."""

    @property
    def rate_limited(self) -> bool:
        """A retriable 429 about the key's quota: the scheduler's business, not the item's."""
        return self.retriable and self.status == 429 and self.error_type == "rate_limit_error"


@dataclass(slots=True)
class Success(Generic[T]):
    """One attempt's (or one poll's) usable value, inside an adapter, before its item ends."""

    value: T


# The outcome types below are values: never changed once made (`dataclasses.replace` makes
# another). They are not `frozen` only because frozen ones (each field set through
# `object.__setattr__`) measured +4% instructions a request in
# `benchmarks/responses_overhead.py --instructions`, and three are built for every item.


@dataclass(slots=True)
class Bill:
    """What an item was billed, in the units its API bills (read by each adapter's price
    model: the engine prices nothing). `cents`: the provider's own figure, when it says."""

    model: str = ""
    tier: str | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    tokens: bool = False
    """The answer reported its tokens (a usage of zeros included)."""
    pages: int | None = None
    cents: float | None = None


@dataclass(slots=True)
class Ids:
    """The provider's names for an item's work, as its result shows them."""

    request: str | None = None
    """The request the API accepted (a Datalab job)."""
    group: str | None = None
    """The group it ran in (an OpenAI batch)."""
    line: str | None = None
    """Its line in that group (a Batch API `custom_id`)."""


@dataclass(slots=True)
class Answered(Generic[T]):
    """An item that ended with its answer: the adapter's parsed `value` (a Responses
    `Answer`, a Datalab job's result, a pipeline's row facts)."""

    value: T
    attempts: int
    rate_limited: int = 0
    bill: Bill | None = None
    ids: Ids | None = None


@dataclass(slots=True)
class Failed(Generic[T]):
    """An item that ended without an answer, and why. `value`: what it has despite that
    (a pipeline row's finished OCR), for its adapter's rendering; `bill`: what it was billed
    anyway (that OCR)."""

    failure: Failure
    attempts: int
    rate_limited: int = 0
    bill: Bill | None = None
    ids: Ids | None = None
    value: T | None = None


@dataclass(slots=True)
class Pending(Generic[T]):
    """An item whose work the provider accepted and may still answer, given up on by this
    run (`failure` says why): a failure for this run, but the journal keeps the work
    (an OpenAI batch's line) so a rerun asks the provider again rather than resending it.
    `value` and `bill` as `Failed`'s: what it has and was billed despite that (a pipeline
    row's finished OCR, whose extraction waits on a batch); nothing for a lone batch line."""

    failure: Failure
    attempts: int
    rate_limited: int = 0
    bill: Bill | None = None
    ids: Ids | None = None
    value: T | None = None


Outcome: TypeAlias = Answered[T] | Failed[T] | Pending[T]
"""What an adapter's item came to: `Answered` is the only success."""

Origin = Literal["sent", "journal", "twin"]


@dataclass(slots=True)
class ItemEnd(Generic[T]):
    """The driver's record of an ended item, which the adapter renders as its result dict.

    `origin`: "sent" (run now), "journal" (answered by the journal: `record` is the result
    dict journaled then), "twin" (`dedupe`: the answer of item `duplicate_of`, at no cost:
    its `attempts` and `rate_limited` are 0).
    """

    index: int
    outcome: Outcome[T]
    started: float
    origin: Origin = "sent"
    duplicate_of: int | None = None
    record: Mapping[str, Any] | None = None


class BatchStop:
    """The first failure that dooms every item (a bad key, no quota), once seen, or the
    batch's deadline once passed (`engine.cutoff`).

    Workers check it before each attempt, so the rest of the batch ends at once with
    that error instead of each item paying for its own doomed request (or being sent
    after the deadline).
    """

    __slots__ = ("failure", "cut_off")

    def __init__(self) -> None:
        self.failure: Failure | None = None
        self.cut_off = False
        """`failure` is the deadline's: the items not sent end with it, journaled."""

    @property
    def doomed(self) -> bool:
        """A failure dooms the batch (not the deadline's): its items end unsent, none
        replayed."""
        return self.failure is not None and not self.cut_off

    def record(self, failure: Failure) -> None:
        if failure.dooms_batch and self.failure is None:
            self.failure = failure

    def cut(self, failure: Failure) -> None:
        """The deadline passed: nothing more is sent (unless a doom came first)."""
        if self.failure is None:
            self.failure = failure
            self.cut_off = True
