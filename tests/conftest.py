from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from genai_coroutines.emulator import Emulator, EmulatorConfig
from tests.server_support import Server


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A fresh emulator on a free loopback port; tests tune `emulator.config` as they need."""
    async with Emulator(EmulatorConfig(seconds_per_page=0.01)) as emu:
        yield emu


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client with the emulator's Datalab key, to speak to its API directly."""
    headers = {"X-Api-Key": emulator.config.datalab_api_key}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK pointed at the emulator (no retries: each test sees every answer)."""
    async with openai.AsyncOpenAI(
        api_key=emulator.config.openai_api_key, base_url=emulator.openai_base_url, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    """(the API the client was given, "elsewhere": where a redirect would take the key)."""
    pair = (Server(), Server())
    yield pair
    for server in pair:
        if server.url:
            await server.runner.cleanup()
