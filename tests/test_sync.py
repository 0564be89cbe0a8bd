"""Blocking entry points: in a plain script, and inside a running event loop (Jupyter)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import samples

from genai_coroutines import (
    DocumentConfig,
    DocumentProcessor,
    ResponsesProcessor,
    ResponsesRequest,
    run_sync,
)
from genai_coroutines.emulator import Emulator, EmulatorConfig


@pytest.fixture
def threaded_emulator(emulator_config: EmulatorConfig) -> Iterator[Emulator]:
    """An emulator on its own loop in a thread, so the caller's loop may block on a batch."""
    emulator = Emulator(emulator_config)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(emulator.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(emulator.stop())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield emulator
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _request(emulator: Emulator) -> ResponsesRequest:
    return ResponsesRequest(
        api_key=emulator.config.openai_api_key,
        base_url=emulator.openai_base_url,
        model="gpt-4o-mini",
        system_prompt="Be brief.",
        user_prompts=["one", "two", "three"],
        response_format={"type": "text"},
    )


def test_process_batch_sync_in_a_plain_script(threaded_emulator: Emulator) -> None:
    results = ResponsesProcessor().process_batch_sync(_request(threaded_emulator))
    assert results["total_success"] == 3


def test_process_multiparts_sync_in_a_plain_script(threaded_emulator: Emulator) -> None:
    config = DocumentConfig(
        api_key=threaded_emulator.config.datalab_api_key,
        api_url=threaded_emulator.marker_url,
        poll_interval_secs=0.01,
    )
    results = DocumentProcessor(config).process_multiparts_sync([samples.pdf(2)])
    assert results[0]["success"] and results[0]["page_count"] == 2


async def test_sync_entry_point_inside_a_running_loop(threaded_emulator: Emulator) -> None:
    asyncio.get_running_loop()  # as in a notebook cell: a loop is running in this thread
    results = ResponsesProcessor().process_batch_sync(_request(threaded_emulator))
    assert [r["index"] for r in results["results"]] == [0, 1, 2]


async def test_run_sync_returns_the_coroutines_value_inside_a_loop() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_sync(answer()) == 42


def test_the_library_runs_its_own_loops_on_uvloop_and_leaves_the_policy_alone() -> None:
    import uvloop

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert run_sync(loop_type()) is uvloop.Loop
    assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    assert asyncio.run(loop_type()) is not uvloop.Loop
