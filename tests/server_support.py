"""A loopback aiohttp server a test gives its own routes: an API that misbehaves on purpose.

The `servers` fixture (in conftest.py) hands out two of them: the API a client is given
and "elsewhere", where a redirect would take the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """One loopback server whose routes a test sets; it records every request's headers."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.seen: list[dict[str, str]] = []
        self.url = ""

    async def start(self, routes: list[tuple[str, str, Handler]]) -> None:
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.seen.append(dict(request.headers))
            return await handler(request)

        self.app.middlewares.append(web.middleware(record))
        for method, path, handler in routes:
            self.app.router.add_route(method, path, handler)
        self.runner = web.AppRunner(self.app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
