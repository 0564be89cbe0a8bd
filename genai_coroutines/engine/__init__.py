"""The batch engine every adapter runs on: the driver, transport, retry policy, limits.

Internal: users import from `genai_coroutines`; adapters import from here.
"""

from .batch import (
    Adapter,
    Admission,
    BatchOptions,
    BatchRun,
    Deferred,
    Driver,
    DriverCore,
    Group,
    GroupedStage,
    GroupRun,
    ItemRun,
    Line,
    Submission,
)
from .bookkeeping import Result
from .clients import USER_AGENT, ClientOptions, Clients
from .headers import parse_duration, retry_after
from .http import BodyReader, ConnectorFactory, Reply, send, transfer_timeout
from .limiter import Capacity, RateLimiter
from .limits import LOCAL, KeyLimits, key_digest, limit_key
from .logs import log_event
from .outcome import (
    ERROR_TYPES,
    Answered,
    BatchStop,
    Bill,
    ErrorType,
    Failed,
    Failure,
    Ids,
    ItemEnd,
    Outcome,
    Pending,
    Success,
    error_type_for,
)
from .polling import Check, poll_until
from .retry import Retried, RetryDetails, RetryPolicy, retrying, status_is_retriable
from .runner import collect_in_order, count, run_streaming
from .store import LimitStore, MemoryStore

__all__ = [
    "ERROR_TYPES",
    "LOCAL",
    "USER_AGENT",
    "Adapter",
    "Admission",
    "BatchOptions",
    "BatchRun",
    "Deferred",
    "Group",
    "GroupedStage",
    "GroupRun",
    "BatchStop",
    "BodyReader",
    "Capacity",
    "Check",
    "ClientOptions",
    "Clients",
    "ConnectorFactory",
    "Driver",
    "DriverCore",
    "ErrorType",
    "Failure",
    "ItemRun",
    "Line",
    "KeyLimits",
    "LimitStore",
    "MemoryStore",
    "RateLimiter",
    "Reply",
    "Result",
    "Retried",
    "RetryDetails",
    "RetryPolicy",
    "Submission",
    "Success",
    "Answered",
    "Bill",
    "Failed",
    "Ids",
    "ItemEnd",
    "Outcome",
    "Pending",
    "collect_in_order",
    "count",
    "error_type_for",
    "key_digest",
    "limit_key",
    "log_event",
    "parse_duration",
    "poll_until",
    "retry_after",
    "retrying",
    "run_streaming",
    "send",
    "status_is_retriable",
    "transfer_timeout",
]
