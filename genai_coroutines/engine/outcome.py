"""What an attempt comes to, and the one vocabulary of failure both APIs share.

Per-item failures are values, never exceptions: a `Failure` names its `error_type`
from `ErrorType`, one list for both APIs, with the same name for the same situation
(a 429 is `rate_limit_error` whether OpenAI or Datalab sent it). The names are the
OpenAI SDK's where it has one (`authentication_error`, `rate_limit_error`, ...), as
the Rust genai-coroutines README shows; the rest name what this library saw. Control flow branches
on these names, so a typo is a type error under mypy, not a silent mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, get_args

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
    value: T


class BatchStop:
    """The first failure that dooms every item (a bad key, no quota), once seen.

    Workers check it before each attempt, so the rest of the batch ends at once with
    that error instead of each item paying for its own doomed request.
    """

    __slots__ = ("failure",)

    def __init__(self) -> None:
        self.failure: Failure | None = None

    def record(self, failure: Failure) -> None:
        if failure.dooms_batch and self.failure is None:
            self.failure = failure
