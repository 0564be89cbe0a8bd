from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from genai_coroutines.emulator import Emulator, EmulatorConfig
from tests.server_support import Server


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """A test's emulator settings, with API keys of the test's own. The library keeps what
    it learns of a key's limits (a first request sent alone until then, ceilings) for the
    process, per key and URL, and the OS hands a loopback port out again: a test on a
    reused port with the default keys would start where an earlier test left off."""
    tag = secrets.token_hex(4)
    return EmulatorConfig(
        seconds_per_page=0.01,
        openai_api_key=f"sk-emulator-{tag}",
        datalab_api_key=f"dl-emulator-{tag}",
    )


@pytest.fixture
async def emulator(emulator_config: EmulatorConfig) -> AsyncIterator[Emulator]:
    """A fresh emulator on a free loopback port; tests tune `emulator.config` as they need."""
    async with Emulator(emulator_config) as emu:
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
