"""The request engine both adapters share: transport, retry policy, rate limits, runner."""

from .headers import parse_duration, retry_after
from .http import Reply, open_session, send
from .limiter import Capacity, RateLimiter
from .logs import log_event
from .retry import BatchStop, Failure, RetryPolicy, Success, retrying, status_is_retriable
from .runner import collect_in_order, run_streaming

__all__ = [
    "BatchStop",
    "Capacity",
    "Failure",
    "RateLimiter",
    "Reply",
    "RetryPolicy",
    "Success",
    "collect_in_order",
    "log_event",
    "open_session",
    "parse_duration",
    "retry_after",
    "retrying",
    "run_streaming",
    "send",
    "status_is_retriable",
]
