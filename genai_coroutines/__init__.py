"""genai-coroutines: batches through the OpenAI Responses API and the Datalab Marker API
as fast as their rate limits allow, with nothing lost and nothing paid twice."""

import logging

from .documents import DocumentConfig, DocumentProcessor, parse_documents
from .engine.summary import BatchSummary, Price
from .engine.sync import run_sync
from .responses import ResponsesProcessor, ResponsesRequest, parse_responses, parse_responses_as

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BatchSummary",
    "DocumentConfig",
    "DocumentProcessor",
    "Price",
    "ResponsesProcessor",
    "ResponsesRequest",
    "parse_documents",
    "parse_responses",
    "parse_responses_as",
    "run_sync",
]
