"""What the OpenAI side's asynchronous paths (background responses, files, batches) use of the
`/v1/responses` emulation that owns them.

A protocol, so those paths need not import `openai_api`, which builds them: the imports go
one way, from `openai_api` down. `OpenAIEmulation` is the one implementation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from .shared import Shared


class ResponsesHost(Protocol):
    """The emulator's shared state and the `/v1/responses` steps a path reuses."""

    shared: Shared

    def check(self, body: Any) -> None:
        """Raise the `ApiError` `/v1/responses` would answer to `body`."""

    def produce(
        self, body: dict[str, Any], response_id: str | None = None, *, keep: bool = True
    ) -> dict[str, Any]:
        """The full Response to a checked body."""

    async def think(self) -> None:
        """Wait the model's latency."""

    def settle(self, cost: int, result: dict[str, Any] | None) -> None:
        """Correct an admission charge of `cost` tokens to what `result` used."""

    async def guarded(
        self,
        endpoint: str,
        request: web.Request,
        handler: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Fault injection, bearer auth, then `handler`, counted under `endpoint`."""

    def plain_json(self, status: int, payload: Any, started: float) -> web.Response:
        """A JSON answer with OpenAI's headers but no rate-limit ones."""
