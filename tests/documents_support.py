"""Helpers shared by the `test_documents_*` modules."""

from __future__ import annotations

from typing import Any

import aiohttp
from datalab_sdk import AsyncDatalabClient  # type: ignore[import-untyped]

from genai_coroutines import DocumentConfig, DocumentProcessor
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine import LimitStore, limit_key


def config(**options: Any) -> DocumentConfig:
    """A valid config aimed at no server, for what is checked at construction."""
    return DocumentConfig(**{"api_key": "dl-test-secret-0123456789", **options})


def config_for(emulator: Emulator, **options: Any) -> DocumentConfig:
    """A config aimed at the emulator, polling and retrying fast unless the test says otherwise."""
    options.setdefault("poll_interval_secs", 0.01)
    options.setdefault("base_retry_delay_secs", 0.01)
    return DocumentConfig(
        api_key=emulator.config.datalab_api_key, api_url=emulator.marker_url, **options
    )


def sdk_client(emulator: Emulator) -> AsyncDatalabClient:
    """The official Datalab SDK aimed at the emulator, with its key."""
    return AsyncDatalabClient(
        api_key=emulator.config.datalab_api_key, base_url=emulator.datalab_base_url
    )


def accepted_forms(emulator: Emulator) -> list[dict[str, str]]:
    """The form fields of every upload the emulator accepted, oldest first."""
    return [seen["form"] for seen in emulator.stats.received if seen.get("status") == 200]


def form(
    data: bytes | None = None,
    *,
    filename: str = "doc.pdf",
    content_type: str = "application/pdf",
    **fields: str,
) -> aiohttp.FormData:
    """A submission form; `data=None` sends no file part (for `file_url` tests)."""
    body = aiohttp.FormData()
    if data is not None:
        body.add_field("file", data, filename=filename, content_type=content_type)
    for name, value in fields.items():
        body.add_field(name, value)
    return body


class ServerPages(DocumentProcessor):
    """Notes the emulator's pages in flight as each upload is accepted."""

    seen: list[int]

    def __init__(self, config: DocumentConfig, emulator: Emulator, **options: Any) -> None:
        super().__init__(config, **options)
        self.emulator = emulator
        self.seen = []

    def on_submitted(self, index: int, request_id: str, request_check_url: str) -> None:
        self.seen.append(self.emulator.datalab.pages_in_flight)


async def pages_admitted(store: LimitStore, emulator: Emulator) -> int:
    """How many one-page jobs the emulator key's pages capacity admits now, nothing else in
    flight, under its default total of 5,000: the ceiling it learned, if any."""
    key = limit_key(f"datalab:{emulator.base_url}", emulator.config.datalab_api_key)
    leases = []
    while len(leases) <= 5000 and (lease := await store.lease(key, 1, 5000, 60)) is not None:
        leases.append(lease)
    for lease in leases:
        await store.release(key, lease)
    return len(leases)
