"""The Datalab Marker API adapter: `DocumentConfig`, `DocumentProcessor`, `parse_documents`."""

from ..engine import Submission
from .config import DocumentConfig
from .parse import parse_documents
from .processor import DocumentProcessor
from .sources import DocumentInput

__all__ = [
    "DocumentConfig",
    "DocumentInput",
    "DocumentProcessor",
    "Submission",
    "parse_documents",
]
