"""`parse_responses` and `parse_documents`, under the module name users of the Rust
genai-coroutines library may import them from."""

from .documents import parse_documents
from .responses import parse_responses

__all__ = ["parse_documents", "parse_responses"]
