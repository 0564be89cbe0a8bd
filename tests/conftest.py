from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from genai_coroutines.emulator import Emulator, EmulatorConfig


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
