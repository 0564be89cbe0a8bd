"""The OpenAI Batch API path (see `path`)."""
