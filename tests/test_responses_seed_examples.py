"""The seed README's Responses examples, run as written against the emulator.

Only `api_key` (and an added `base_url`) differ from the README; everything else,
including `asyncio.run(main())` and the prints, is the seed's text.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator

import pytest

from genai_coroutines import ResponsesProcessor, ResponsesRequest, parse_responses
from genai_coroutines.emulator import Emulator, EmulatorConfig

KEY = "sk-seed-examples"


@pytest.fixture
def emulator_in_thread() -> Iterator[Emulator]:
    """An emulator on its own loop in a thread, for examples that call `asyncio.run` themselves."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["stop"], holder["loop"] = stop, asyncio.get_running_loop()
        async with Emulator(EmulatorConfig(openai_api_key=KEY)) as emu:
            holder["emu"] = emu
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    emu = holder["emu"]
    assert isinstance(emu, Emulator)
    yield emu
    loop = holder["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    loop.call_soon_threadsafe(holder["stop"].set)  # type: ignore[attr-defined]
    thread.join(10)


def test_usage_example(emulator_in_thread: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    BASE_URL = emulator_in_thread.openai_base_url

    # --- the seed's "Usage Example", verbatim but for api_key and base_url -------------
    async def main():  # type: ignore[no-untyped-def]
        request = ResponsesRequest(
            api_key=KEY,
            base_url=BASE_URL,
            model="gpt-4o-mini",
            system_prompt="You are an expert data extractor.",
            user_prompts=[
                "Extract: John Doe, 45, hypertension",
                "Extract: Jane Smith, 32, diabetes",
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "patient",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "age": {"type": "integer"},
                            "condition": {"type": "string"},
                        },
                        "required": ["name", "age", "condition"],
                        "additionalProperties": False,
                    },
                    "strict": True,
                },
            },
            max_concurrent_requests=20,
            max_retries=3,
        )

        processor = ResponsesProcessor()
        results = await processor.process_batch(request)

        # Parse clean text
        texts = parse_responses(results)
        for text in texts:
            data = json.loads(text)
            print(f"{data['name']} — {data['condition']}")

        # Access token usage (native Python dict — no json.loads needed)
        for r in results["results"]:
            if r["success"] and r.get("usage"):
                usage = r["usage"]  # Already a dict
                print(f"Tokens: {usage['total_tokens']}")

    asyncio.run(main())  # type: ignore[no-untyped-call]
    # -----------------------------------------------------------------------------------

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert all(re.fullmatch(r"\S+ — \S+", line) for line in lines[:2])
    assert all(re.fullmatch(r"Tokens: \d+", line) for line in lines[2:])
    assert emulator_in_thread.stats.requests["responses 200"] == 2


async def test_structured_output_examples(emulator: Emulator) -> None:
    key, base_url = emulator.config.openai_api_key, emulator.openai_base_url
    processor = ResponsesProcessor()
    request = ResponsesRequest(
        api_key=key,
        base_url=base_url,
        model="gpt-4o-mini",
        system_prompt="Extract patient info from the text.",
        user_prompts=["Patient John Doe, age 45, diagnosed with hypertension on 2024-01-15."],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "patient_info",
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "age": {"type": "integer"},
                        "diagnosis": {"type": "string"},
                        "date": {"type": "string"},
                    },
                    "required": ["name", "age", "diagnosis", "date"],
                    "additionalProperties": False,
                },
                "strict": True,
            },
        },
    )
    data = json.loads(parse_responses(await processor.process_batch(request))[0])
    assert set(data) == {"name", "age", "diagnosis", "date"} and isinstance(data["age"], int)

    for response_format in ({"type": "json_object"}, {"type": "text"}):
        request = ResponsesRequest(
            api_key=key,
            base_url=base_url,
            model="gpt-4o-mini",
            system_prompt="Extract patient info from the text.",
            user_prompts=["Patient John Doe, age 45, diagnosed with hypertension."],
            response_format=response_format,
        )
        results = await processor.process_batch(request)
        assert results["total_success"] == 1, results


async def test_reasoning_example(emulator: Emulator) -> None:
    request = ResponsesRequest(
        api_key=emulator.config.openai_api_key,
        base_url=emulator.openai_base_url,
        model="o3-mini",
        system_prompt="Solve this step by step.",
        user_prompts=["What is 1234 * 5678?"],
        response_format={"type": "text"},
        reasoning_effort="high",  # low | medium | high
        reasoning_summary="detailed",  # auto | concise | detailed
    )
    results = await ResponsesProcessor().process_batch(request)
    assert results["total_success"] == 1
    assert results["results"][0]["usage"]["output_tokens_details"]["reasoning_tokens"] > 0


async def test_tools_example(emulator: Emulator) -> None:
    request = ResponsesRequest(
        api_key=emulator.config.openai_api_key,
        base_url=emulator.openai_base_url,
        model="gpt-4o",
        system_prompt="You are a helpful assistant with access to tools.",
        user_prompts=["What's the weather in San Francisco?"],
        response_format={"type": "text"},
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get current weather for a location",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"],
                    },
                },
            }
        ],
        tool_choice="auto",
    )
    results = await ResponsesProcessor().process_batch(request)
    assert results["total_success"] == 1


async def test_multi_turn_example(emulator: Emulator) -> None:
    processor = ResponsesProcessor()
    request1 = ResponsesRequest(
        api_key=emulator.config.openai_api_key,
        base_url=emulator.openai_base_url,
        model="gpt-4o",
        system_prompt="You are a helpful assistant.",
        user_prompts=["Tell me about the Moon."],
        response_format={"type": "text"},
    )

    # First turn
    results1 = await processor.process_batch(request1)
    response_id = json.loads(results1["results"][0]["raw_response"])["id"]

    # Second turn
    request2 = ResponsesRequest(
        api_key=emulator.config.openai_api_key,
        base_url=emulator.openai_base_url,
        model="gpt-4o",
        system_prompt="You are a helpful assistant.",
        user_prompts=["Can you elaborate on that?"],
        response_format={"type": "text"},
        previous_response_id=response_id,  # Continue the conversation
    )
    results2 = await processor.process_batch(request2)

    assert results2["total_success"] == 1
    assert results2["results"][0]["usage"]["input_tokens_details"]["cached_tokens"] > 0
