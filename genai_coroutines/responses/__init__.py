"""OpenAI Responses API adapter: `ResponsesRequest` / `ResponsesProcessor` /
`parse_responses` as the Rust library's README has them, correct on the wire and
resilient to every failure."""

from .batch import BatchAPI
from .parse import parse_responses, parse_responses_as
from .processor import ResponsesProcessor
from .request import ResponsesRequest

__all__ = [
    "BatchAPI",
    "ResponsesProcessor",
    "ResponsesRequest",
    "parse_responses",
    "parse_responses_as",
]
