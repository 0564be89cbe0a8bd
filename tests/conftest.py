from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from genai_coroutines.emulator import Emulator, EmulatorConfig


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A fresh emulator on a free loopback port; tests tune `emulator.config` as they need."""
    async with Emulator(EmulatorConfig(seconds_per_page=0.01)) as emu:
        yield emu
