"""The emulator process: one aiohttp server on 127.0.0.1 speaking both APIs.

async with Emulator(EmulatorConfig(openai_rpm=600)) as emu:
    emu.openai_base_url   # http://127.0.0.1:PORT/v1
    emu.datalab_base_url  # http://127.0.0.1:PORT  (marker at emu.marker_url)
    emu.faults.schedule("responses", "503", times=2)
    emu.stats.snapshot()
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

from aiohttp import web

from . import datalab_api, openai_api
from .shared import Shared
from .state import EmulatorConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Emulator:
    """Local stand-in for api.openai.com and www.datalab.to, for tests, demos and benchmarks."""

    def __init__(self, config: EmulatorConfig | None = None, *, port: int = 0) -> None:
        self.shared = Shared(config or EmulatorConfig())
        self.config = self.shared.config
        self.stats = self.shared.stats
        self.faults = self.shared.faults
        self.port = port
        self.host = "127.0.0.1"
        self.app = web.Application(middlewares=[self._track_in_flight], client_max_size=256 * 2**20)
        self.app.router.add_get("/_emulator/stats", self._get_stats)
        self.app.router.add_post("/_emulator/reset", self._post_reset)
        self.openai = openai_api.OpenAIEmulation(self.shared)
        self.datalab = datalab_api.DatalabEmulation(self.shared)
        self.openai.add_routes(self.app)
        self.datalab.add_routes(self.app)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def datalab_base_url(self) -> str:
        return self.base_url

    @property
    def marker_url(self) -> str:
        return f"{self.base_url}/api/v1/marker"

    def reset(self) -> None:
        """Forget counters, queued faults, rate windows and the prompt cache; jobs already
        accepted stay."""
        self.stats.reset()
        self.faults.clear()
        self.openai.reset_limits()
        self.datalab.reset_limits()

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await self.openai.close()
        await self.datalab.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @web.middleware
    async def _track_in_flight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_emulator"):
            return await handler(request)
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        try:
            return await handler(request)
        finally:
            self.stats.in_flight -= 1

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot())

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


async def serve_forever(config: EmulatorConfig, port: int) -> None:
    """Run until cancelled (the `genai-coroutines emulate` command)."""
    async with Emulator(config, port=port) as emu:
        print(f"OpenAI  base_url: {emu.openai_base_url}  (api key: {config.openai_api_key})")
        print(f"Datalab api_url:  {emu.marker_url}  (api key: {config.datalab_api_key})")
        print(f"Stats:            {emu.base_url}/_emulator/stats", flush=True)
        await asyncio.Event().wait()
