"""genai-coroutines: batches through the OpenAI Responses API and the Datalab API as fast
as their rate limits allow, with nothing lost and nothing paid twice.

Everything a user imports is here; the subpackages (`engine`, `responses`, `documents`)
are the implementation, and `emulator` is the local stand-in for both APIs.
"""

import logging

from .documents import DocumentConfig, DocumentProcessor, parse_documents
from .engine import ERROR_TYPES, ErrorType, KeyLimits, Submission
from .engine.journal import Journal, JournalError, JournalLocked, JournalMismatch
from .engine.store import LimitStoreUnavailable
from .engine.sync import run_sync
from .pipeline import DatalabExtraction, ExtractionPipeline, PipelineSummary, extraction_request
from .responses import (
    BatchAPI,
    ResponsesProcessor,
    ResponsesRequest,
    parse_responses,
    parse_responses_as,
)
from .responses.prices import PRICES, Price
from .summary import BatchSummary

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ERROR_TYPES",
    "PRICES",
    "BatchAPI",
    "BatchSummary",
    "DatalabExtraction",
    "DocumentConfig",
    "DocumentProcessor",
    "ErrorType",
    "ExtractionPipeline",
    "Journal",
    "JournalError",
    "JournalLocked",
    "JournalMismatch",
    "KeyLimits",
    "LimitStoreUnavailable",
    "PipelineSummary",
    "Price",
    "ResponsesProcessor",
    "ResponsesRequest",
    "Submission",
    "extraction_request",
    "parse_documents",
    "parse_responses",
    "parse_responses_as",
    "run_sync",
]
