"""The seed's parsing helpers, under the module name the seed's users may import from."""

from .documents import parse_documents
from .responses import parse_responses

__all__ = ["parse_documents", "parse_responses"]
